"""The benchmark suite stays runnable: every part in smoke mode (tiny sizes, one repetition).
Its figures are not asserted against targets here: timings belong to the full run."""

import json
import os
import subprocess
import sys

from tests.conftest import REPO


def test_bench_suite_smoke_mode_writes_every_part_to_its_report(tmp_path):
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "bench", "run.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["quick"] and report["machine"]["cores"] >= 1
    assert report["machine"]["versions"]["tensorflow-cpu"].startswith("2.15.")
    parts = report["parts"]
    assert list(parts) == ["throughput", "startup", "orchestration", "storage", "cluster"]

    throughput = parts["throughput"]
    assert [(r["format"], r["batch"]) for r in throughput] == [
        ("csv", 32),
        ("csv", 256),
        ("tfrecord", 32),
        ("tfrecord", 256),
    ]
    for r in throughput:
        assert (
            r["value"]["median"] > 0 and r["baseline"]["median"] > 0 and r["upstream"]["median"] > 0
        )

    startup = {r["measure"].split(" (")[0]: r for r in parts["startup"]}
    assert startup["import airflow_plugin and its operators"]["tensorflow"] is False
    assert startup["parse dags/"]["tensorflow"] is False
    assert 0 < startup["k2e --help"]["value"]["median"] < 5

    orchestration = parts["orchestration"]
    assert [r.get("tasks") for r in orchestration] == [None, 1, 4, 1, 4]
    assert all(r["value"]["median"] > 0 for r in orchestration)
    assert all(0 < r["floor"]["median"] < r["value"]["median"] for r in orchestration[1:])

    publish_loopback, publish_rtt, resume = parts["storage"]
    assert publish_rtt["baseline"]["median"] > publish_loopback["baseline"]["median"]
    assert resume["unit"] == "bytes"
    assert resume["baseline"]["median"] <= resume["value"]["median"] < resume["model_dir_bytes"]

    (cluster,) = parts["cluster"]
    assert cluster["layout"] == "workers=1,ps=1" and cluster["model"] == "iris"
    assert cluster["value"]["median"] > 0 and cluster["baseline"]["median"] > 0

    text = (tmp_path / "REPORT.md").read_text()
    assert "Smoke mode" in text and text.count("####") == 5
    assert "| iris | tfrecord | 256 |" in text
