"""The benchmark suite stays runnable: every part in smoke mode (tiny sizes, one repetition),
one test per part so that parallel test workers share them. Figures are not asserted against
targets here: timings belong to the full run."""

import json
import os
import subprocess
import sys

import pytest

from bench.run import PARTS
from tests.conftest import REPO


def _check_throughput(rows):
    assert [(r["format"], r["batch"], r.get("kind")) for r in rows] == [
        ("csv", 32, None),
        ("csv", 256, None),
        ("tfrecord", 32, None),
        ("tfrecord", 256, None),
        ("tfrecord", 32, "curves"),  # what TensorBoard's defaults cost
        ("csv", 32, "premade"),  # what a pre-made baseline costs: linear
        ("csv", 32, "premade"),  # and dnn
    ]
    for r in rows:
        assert r["value"]["median"] > 0 and r["baseline"]["median"] > 0
    assert all(r["upstream"]["median"] > 0 for r in rows[:4])
    assert [r["premade"] for r in rows[5:]] == ["linear", "dnn"]
    walls = rows[4]["walls"]
    assert walls["defaults"]["median"] > walls["curves"]["median"]  # five evaluations


def _check_pipeline(rows):
    kinds = [r["kind"] for r in rows]
    assert kinds == ["pipeline"] * 6 + ["training"] + ["parquet"] * 4 + ["shards"] * 2 + ["stream"]
    assert rows[5]["measure"] == "pipeline alone, parquet"
    assert all(r["value"]["median"] > 0 and r["baseline"]["median"] > 0 for r in rows)
    # peak memory reading a big Parquet file against a small one, locally and from S3
    assert [r["unit"] for r in rows[9:11]] == ["MiB", "MiB"] and "S3" in rows[10]["measure"]
    stream = rows[-1]
    # streamed: 64 shards never need more local disk than the data
    assert 0 < stream["disk"]["64"]["median"] <= stream["data_bytes"]


def _check_startup(rows):
    startup = {r["measure"].split(" (")[0]: r for r in rows}
    assert startup["import airflow_plugin and its operators"]["tensorflow"] is False
    assert startup["parse dags/"]["tensorflow"] is False
    assert 0 < startup["k2e --help"]["value"]["median"] < 5


def _check_orchestration(rows):
    assert [r.get("tasks") for r in rows] == [None, 1, 4, 1, 4]
    assert all(r["value"]["median"] > 0 for r in rows)
    assert all(0 < r["floor"]["median"] < r["value"]["median"] for r in rows[1:])


def _check_storage(rows):
    publish_loopback, publish_rtt, resume, checkpoints, one_file = rows
    assert publish_rtt["baseline"]["median"] > publish_loopback["baseline"]["median"]
    assert resume["unit"] == "bytes"
    assert resume["baseline"]["median"] <= resume["value"]["median"] < resume["model_dir_bytes"]
    # training with model_dir on S3 against a local one; one file against s3fs's put_file
    assert checkpoints["value"]["median"] > 0 and checkpoints["baseline"]["median"] > 0
    assert checkpoints["unit"] == "steps/s" and "checkpoints uploaded" in checkpoints["note"]
    assert one_file["unit"] == "MB/s" and one_file["baseline"]["median"] > 0


def _check_cluster(rows):
    (cluster,) = rows
    assert cluster["layout"] == "workers=1,ps=1" and cluster["model"] == "iris"
    assert cluster["value"]["median"] > 0 and cluster["baseline"]["median"] > 0


def _check_keras_trainer(rows):
    (cell,) = rows
    assert (cell["model"], cell["format"], cell["batch"]) == ("iris", "tfrecord", 32)
    assert cell["value"]["median"] > 0 and cell["baseline"]["median"] > 0
    assert cell["baseline_name"] == "Keras 3 fit"


CHECKS = {
    "throughput": _check_throughput,
    "pipeline": _check_pipeline,
    "startup": _check_startup,
    "orchestration": _check_orchestration,
    "storage": _check_storage,
    "cluster": _check_cluster,
    "keras_trainer": _check_keras_trainer,
}


def test_every_part_is_smoke_tested():
    assert list(PARTS) == list(CHECKS)


@pytest.mark.slow
@pytest.mark.parametrize("part", list(CHECKS))
def test_bench_part_in_smoke_mode_writes_its_report(part, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "bench", "run.py"),
            "--quick",
            "--parts",
            part,
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["quick"] and report["machine"]["cores"] >= 1
    assert report["machine"]["versions"]["tensorflow-cpu"].startswith("2.15.")
    assert list(report["parts"]) == [part]
    CHECKS[part](report["parts"][part])
    text = (tmp_path / "REPORT.md").read_text()
    assert "Smoke mode" in text and text.count("####") == 1
    assert f"#### {PARTS[part]}" in text
    if part == "throughput":
        assert "| iris | tfrecord | 256 |" in text
