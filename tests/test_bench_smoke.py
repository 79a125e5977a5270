"""The throughput benchmark stays runnable (tiny smoke mode; the full run is not a test)."""

import os
import subprocess
import sys

from tests.conftest import REPO


def test_throughput_benchmark_smoke():
    proc = subprocess.run([sys.executable, os.path.join(REPO, "bench", "throughput.py"), "--quick"],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 5  # header + iris and bag-of-words at batch 32 and 256
    for row in rows[1:]:
        keras, k2e = (float(v) for v in row.split("|")[3:5])
        assert keras > 0 and k2e > 0


def test_storage_benchmark_smoke():
    import json

    proc = subprocess.run([sys.executable, os.path.join(REPO, "bench", "storage.py"), "--quick"],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["publish_files"] == 22
    assert 0 < report["resume_download_bytes"] < report["model_dir_bytes"]


def test_orchestration_benchmark_smoke():
    import json

    proc = subprocess.run([sys.executable, os.path.join(REPO, "bench", "orchestration.py"), "--quick"],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["k2e_run_s"]["median"] > 0 and report["airflow_dags_test_s"]["median"] > 0
    assert report["kfp_local_s"]["median"] > 0
    assert 0 < report["operators_import_ms"]["median"] <= report["operators_import_cold_ms"]["median"]
