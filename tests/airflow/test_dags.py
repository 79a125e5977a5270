"""The example DAGs in a real Airflow: SQLite metadata DB, `airflow dags test`, real training."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.airflow.conftest import dags_test
from tests.conftest import REPO

DAGS = os.path.join(REPO, "dags")


@pytest.fixture
def iris_spec_file(iris_spec, tmp_path):
    path = tmp_path / "iris.json"
    path.write_text(json.dumps(iris_spec))
    return str(path)


def _xcom(db, dag_id, task_id, key):
    rows = db.execute("SELECT value FROM xcom WHERE dag_id=? AND task_id=? AND key=? "
                      "ORDER BY timestamp", (dag_id, task_id, key)).fetchall()
    return [json.loads(value) for (value,) in rows]


def _asset_events(db, uri):
    rows = db.execute("SELECT e.extra, e.source_dag_id, e.source_task_id FROM asset_event e "
                      "JOIN asset a ON a.id = e.asset_id WHERE a.uri = ? ORDER BY e.id",
                      (uri,)).fetchall()
    return [(json.loads(extra), dag, task) for extra, dag, task in rows]


def test_every_dag_file_imports_fast_without_tensorflow():
    code = (
        "import json, sys, time\n"
        "import airflow.sdk\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        "began = time.perf_counter()\n"
        f"bag = DagBag(dag_folder={DAGS!r})\n"
        "print(json.dumps({'seconds': time.perf_counter() - began, 'errors': bag.import_errors,\n"
        "                  'dags': sorted(bag.dag_ids), 'files': len(bag.dagbag_stats),\n"
        "                  'tensorflow': 'tensorflow' in sys.modules,\n"
        "                  'k2e_job': 'k2e_core.job' in sys.modules}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["errors"] == {}
    assert report["dags"] == ["k2e_iris_consumer", "k2e_iris_retraining"]
    assert report["files"] == len([f for f in os.listdir(DAGS) if f.endswith(".py")])
    assert not report["tensorflow"] and not report["k2e_job"]
    assert report["seconds"] < 2.0, report  # parsing both files, after Airflow itself is imported


def test_retraining_dag_twice_publishes_versions_and_asset_events(airflow_db, iris_spec_file, tmp_path):
    root = tmp_path / "iris"
    conf = {"spec": iris_spec_file, "root": str(root), "train_steps": 150}

    first = dags_test("k2e_iris_retraining", "2026-11-01", conf)
    assert first.returncode == 0, first.output[-3000:]
    assert (root / "runs" / "20261101T000000" / "model.ckpt-150.index").exists()
    assert (root / "models" / "1" / "saved_model.pb").exists()
    metrics = _xcom(airflow_db, "k2e_iris_retraining", "evaluate", "metrics")
    assert len(metrics) == 1 and 0.0 <= metrics[0]["accuracy"] <= 1.0
    assert metrics[0]["global_step"] == 150

    second = dags_test("k2e_iris_retraining", "2026-11-02", conf)
    assert second.returncode == 0, second.output[-3000:]
    assert (root / "runs" / "20261102T000000" / "model.ckpt-150.index").exists()
    manifest = json.loads((root / "models" / "2" / "k2e-manifest.json").read_text())
    assert manifest["source"]["warm_start"] == {
        "from": "latest", "version": 1, "url": str(root / "models" / "1")}
    assert manifest["source"]["model_dir"] == str(root / "runs" / "20261102T000000")

    events = _asset_events(airflow_db, f"file://{root}/models")
    assert [e[0]["version"] for e in events] == [1, 2]
    assert all(e[1:] == ("k2e_iris_retraining", "publish") for e in events)
    all_metrics = _xcom(airflow_db, "k2e_iris_retraining", "evaluate", "metrics")
    assert [e[0]["metrics"] for e in events] == all_metrics
    assert events[1][0]["export_path"] == str(root / "models" / "2")

    consumer = dags_test("k2e_iris_consumer")
    assert consumer.returncode == 0, consumer.output[-3000:]
    assert "version 2 predicts species [" in consumer.output
    predicted = _xcom(airflow_db, "k2e_iris_consumer", "predict", "return_value")[-1]
    assert predicted["version"] == 2 and len(predicted["species"]) == 3


def test_missing_spec_fails_the_task_with_one_clear_line(airflow_db, tmp_path):
    conf = {"spec": str(tmp_path / "nowhere.yaml"), "root": str(tmp_path / "iris")}
    proc = dags_test("k2e_iris_retraining", "2026-11-03", conf)
    assert proc.returncode != 0
    expected = f"k2e convert: spec: no spec file at {tmp_path / 'nowhere.yaml'}"
    assert expected in proc.output
    assert not (tmp_path / "iris" / "models").exists()
