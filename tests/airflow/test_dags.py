"""The example DAGs in a real Airflow: SQLite metadata DB, `airflow dags test`, real training."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.airflow.conftest import dags_test, manual_runs
from tests.conftest import REPO

DAGS = os.path.join(REPO, "dags")


def _xcom(db, dag_id, task_id, key):
    rows = db.execute(
        "SELECT value FROM xcom WHERE dag_id=? AND task_id=? AND key=? ORDER BY timestamp",
        (dag_id, task_id, key),
    ).fetchall()
    return [json.loads(value) for (value,) in rows]


def _asset_events(db, uri):
    rows = db.execute(
        "SELECT e.extra, e.source_dag_id, e.source_task_id FROM asset_event e "
        "JOIN asset a ON a.id = e.asset_id WHERE a.uri = ? ORDER BY e.id",
        (uri,),
    ).fetchall()
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
        "                  'k2e_job': 'k2e_core.steps.job' in sys.modules}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["errors"] == {}
    assert report["dags"] == ["k2e_iris", "k2e_iris_consumer", "k2e_iris_retraining"]
    assert report["files"] == len([f for f in os.listdir(DAGS) if f.endswith(".py")])
    assert not report["tensorflow"] and not report["k2e_job"]
    assert report["seconds"] < 2.0, report  # parsing every file, after Airflow itself is imported


def test_the_retraining_dag_gives_every_task_the_storage_connection():
    code = (
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag(dag_folder={DAGS!r})\n"
        "print(sorted({t.storage_conn_id for t in bag.dags['k2e_iris_retraining'].tasks}))\n"
    )
    env = {**os.environ, "K2E_STORAGE_CONN_ID": "minio_models"}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "['minio_models']"


@pytest.mark.slow
def test_three_scheduled_runs_publish_only_blessed_versions(
    airflow_db, retraining_spec, example_data, tmp_path, monkeypatch
):
    """Day 1 is published (no baseline), day 2 warm-starts from it and is published as
    better, day 3's drifted data gives a worse model: kept as a candidate, no asset event,
    its publish task skipped, and the consumer keeps using version 2. Retrying day 3 changes
    nothing. Each publish task links TensorBoard, its report and the published version."""
    monkeypatch.setenv("AIRFLOW__K2E__TENSORBOARD_URL", "https://tb.example.com/?run={model_dir}")
    spec = tmp_path / "retraining.json"
    spec.write_text(json.dumps(retraining_spec))
    root = tmp_path / "iris"
    days = {1: "2026-11-01", 2: "2026-11-02", 3: "2026-11-03"}

    def run(day):
        conf = {
            "spec": str(spec),
            "root": str(root),
            "train_files": str(example_data / "retraining" / f"day{day}.csv"),
        }
        proc = dags_test("k2e_iris_retraining", days[day], conf)
        assert proc.returncode == 0, proc.output[-3000:]
        return proc

    runs = {day: run(day) for day in days}
    assert (root / "runs" / "20261101T000000" / "model.ckpt-300.index").exists()
    assert sorted(os.listdir(root / "models" / "candidates")) == [
        "k2e_iris_retraining-20261103T000000"
    ]
    assert sorted(n for n in os.listdir(root / "models") if n.isdigit()) == ["1", "2"]
    states = airflow_db.execute(
        "SELECT state FROM task_instance WHERE dag_id=? AND task_id='publish' ORDER BY start_date",
        ("k2e_iris_retraining",),
    ).fetchall()
    assert [state for (state,) in states] == ["success", "success", "skipped"]
    assert "not blessed, so not published: " in runs[3].output
    tensorboard = _xcom(airflow_db, "k2e_iris_retraining", "publish", "_link_K2eTensorBoardLink")
    assert tensorboard == [
        f"https://tb.example.com/?run={root}/runs/2026110{d}T000000" for d in (1, 2, 3)
    ]
    reports = _xcom(airflow_db, "k2e_iris_retraining", "publish", "_link_K2eReportLink")
    assert reports == [f"file://{root}/runs/2026110{d}T000000/report.html" for d in (1, 2, 3)]
    assert all((root / "runs" / f"2026110{d}T000000" / "report.html").exists() for d in (1, 2, 3))
    published = _xcom(airflow_db, "k2e_iris_retraining", "publish", "_link_K2eModelLink")
    assert published == [f"file://{root}/models/1", f"file://{root}/models/2", ""]
    blessed = _xcom(airflow_db, "k2e_iris_retraining", "publish", "blessed")
    reasons = _xcom(airflow_db, "k2e_iris_retraining", "publish", "reason")
    assert blessed == [True, True, False]
    assert "no blessed baseline yet" in reasons[0] and "(baseline version 2:" in reasons[2]
    record = json.loads((root / "models" / "2" / "k2e-record.json").read_text())
    assert record["warm_start"]["version"] == 1 and record["gate"]["baseline"]["version"] == 1
    assert record["run_id"] == "k2e_iris_retraining-20261102T000000"

    events = _asset_events(airflow_db, f"file://{root}/models")
    assert [e[0]["version"] for e in events] == [1, 2]
    assert all(e[1:] == ("k2e_iris_retraining", "publish") for e in events)
    all_metrics = _xcom(airflow_db, "k2e_iris_retraining", "evaluate", "metrics")
    assert [e[0]["metrics"] for e in events] == all_metrics[:2]

    again = run(3)  # the same logical date: the decision recorded for it, nothing new
    assert "was decided before" in again.output
    assert sorted(os.listdir(root / "models" / "candidates")) == [
        "k2e_iris_retraining-20261103T000000"
    ]
    assert len(_asset_events(airflow_db, f"file://{root}/models")) == 2

    consumer = dags_test("k2e_iris_consumer")
    assert consumer.returncode == 0, consumer.output[-3000:]
    assert "version 2 predicts species [" in consumer.output
    predicted = _xcom(airflow_db, "k2e_iris_consumer", "species", "return_value")[-1]
    assert predicted["version"] == 2 and len(predicted["species"]) == 3


@pytest.mark.slow
def test_one_task_dag_runs_the_whole_job_and_a_rerun_publishes_nothing_new(
    airflow_db, iris_spec, tmp_path
):
    spec = tmp_path / "iris.json"
    spec.write_text(json.dumps(iris_spec))
    conf = {"spec": str(spec), "root": str(tmp_path / "iris"), "train_steps": 60}
    first = dags_test("k2e_iris", "2026-11-01", conf)
    assert first.returncode == 0, first.output[-3000:]
    assert sorted(os.listdir(tmp_path / "iris" / "export")) == [".k2e", "1"]
    assert (tmp_path / "iris" / "model" / "model.ckpt-60.index").exists()
    again = dags_test("k2e_iris", "2026-11-02", conf)
    assert again.returncode == 0, again.output[-3000:]
    assert sorted(os.listdir(tmp_path / "iris" / "export")) == [".k2e", "1"]
    results = _xcom(airflow_db, "k2e_iris", "train_and_publish", "return_value")
    assert [(r["version"], r["reused"], r["global_step"]) for r in results] == [
        (1, False, 60),
        (1, True, 60),
    ]


@pytest.mark.slow
def test_every_example_dag_runs_when_triggered_by_hand(
    airflow_db, iris_spec, retraining_spec, example_data, tmp_path
):
    """`airflow dags trigger` (or the UI) starts a run with no logical date: every example
    DAG still runs, the retraining run named by its run_after, and the consumer predicts
    with what that run published."""
    iris = tmp_path / "iris.json"
    iris.write_text(json.dumps(iris_spec))
    retraining = tmp_path / "retraining.json"
    retraining.write_text(json.dumps(retraining_spec))
    root = tmp_path / "retraining"
    runs, output = manual_runs(
        ("k2e_iris", {"spec": str(iris), "root": str(tmp_path / "one"), "train_steps": 60}),
        (
            "k2e_iris_retraining",
            {
                "spec": str(retraining),
                "root": str(root),
                "train_files": str(example_data / "retraining" / "day1.csv"),
                "train_steps": 60,
            },
        ),
        ("k2e_iris_consumer", {}),
    )
    assert [(r["dag_id"], r["state"], r["logical_date"]) for r in runs] == [
        ("k2e_iris", "success", None),
        ("k2e_iris_retraining", "success", None),
        ("k2e_iris_consumer", "success", None),
    ]
    assert sorted(os.listdir(tmp_path / "one" / "export")) == [".k2e", "1"]
    run_after = runs[1]["run_after"]
    assert os.listdir(root / "runs") == [run_after]
    record = json.loads((root / "models" / "1" / "k2e-record.json").read_text())
    assert record["run_id"] == f"k2e_iris_retraining-{run_after}"
    assert "version 1 predicts species [" in output
    assert "UndefinedError" not in output


@pytest.mark.slow
def test_missing_spec_fails_the_task_with_one_clear_line(airflow_db, tmp_path):
    conf = {"spec": str(tmp_path / "nowhere.yaml"), "root": str(tmp_path / "iris")}
    proc = dags_test("k2e_iris_retraining", "2026-11-03", conf)
    assert proc.returncode != 0
    expected = f"k2e convert: error: spec: no spec file at {tmp_path / 'nowhere.yaml'}"
    assert expected in proc.output
    assert not (tmp_path / "iris" / "models").exists()
