"""Airflow as its official images run it: Python 3.12, no TensorFlow, k2e's provider from the
TensorFlow-free install (`make venv-airflow`: `.venv-airflow`, `k2e[airflow,...]` pinned by
constraints.txt). Every TensorFlow step runs in the project's `.venv` (Python 3.11) through
the operators' `python=`, set for the example DAGs by $K2E_PYTHON.

A `sitecustomize` on the 3.12 processes' path records every attempt to import TensorFlow or
numpy there, and which processes it watched, so the test can tell "never imported" from
"not watched".
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess

import pytest

from tests.conftest import REPO

AIRFLOW_VENV = os.path.join(REPO, ".venv-airflow")
K2E_PYTHON = os.path.join(REPO, ".venv", "bin", "python")

WATCH = """
import os, sys
if sys.version_info[:2] == (3, 12):
    log = os.environ["K2E_IMPORT_LOG"]
    with open(log, "a") as f:
        f.write(f"watched {os.getpid()}\\n")

    class Watch:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("tensorflow", "numpy"):
                with open(log, "a") as f:
                    f.write(f"import {name} in {os.getpid()} {sys.argv[:3]}\\n")
            return None

    sys.meta_path.insert(0, Watch())
"""


@pytest.fixture(scope="module")
def airflow312(tmp_path_factory):
    """`airflow` of .venv-airflow against a fresh SQLite DB; (run, db, import log)."""
    home = tmp_path_factory.mktemp("airflow312")
    watch = home / "watch"
    watch.mkdir()
    (watch / "sitecustomize.py").write_text(WATCH)
    log = home / "imports.log"
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": os.path.join(REPO, "dags"),
        "K2E_PYTHON": K2E_PYTHON,
        "K2E_IMPORT_LOG": str(log),
        "PYTHONPATH": str(watch),
        "PYTHONWARNINGS": "ignore",
    }

    def run(*args, timeout=600, **extra_env):
        proc = subprocess.run(
            [os.path.join(AIRFLOW_VENV, "bin", "airflow"), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**env, **extra_env},
        )
        proc.output = proc.stdout + proc.stderr
        return proc

    migrated = run("db", "migrate")
    assert migrated.returncode == 0, migrated.output[-3000:]
    db = sqlite3.connect(home / "airflow.db")
    yield run, db, log
    db.close()


def _xcom(db, dag_id, task_id, key="return_value"):
    rows = db.execute(
        "SELECT value FROM xcom WHERE dag_id=? AND task_id=? AND key=? ORDER BY timestamp",
        (dag_id, task_id, key),
    ).fetchall()
    return [json.loads(value) if isinstance(value, str) else value for (value,) in rows]


def test_the_airflow_environment_is_python_312_without_tensorflow_and_fully_pinned():
    python = os.path.join(AIRFLOW_VENV, "bin", "python")
    version = subprocess.run(
        [python, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True
    )
    assert version.stdout.strip() == "(3, 12)"
    check = subprocess.run([python, "-m", "pip", "check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    frozen = subprocess.run(
        [python, "-m", "pip", "freeze", "--exclude-editable"], capture_output=True, text=True
    ).stdout.lower()
    installed = {line.strip() for line in frozen.splitlines() if "==" in line}
    with open(os.path.join(REPO, "constraints.txt")) as f:
        pinned = {line.strip().lower() for line in f if "==" in line}
    assert installed and installed <= pinned, sorted(installed - pinned)
    names = {line.split("==")[0] for line in installed}
    assert "apache-airflow" in names and not names & {"tensorflow-cpu", "numpy", "keras"}
    # its k2e command says which interpreter trains, in one line, before anything runs
    k2e = os.path.join(AIRFLOW_VENV, "bin", "k2e")
    proc = subprocess.run(
        [k2e, "run", os.path.join(REPO, "examples", "iris.yaml")], capture_output=True, text=True
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert (
        proc.stderr.strip().startswith(
            "k2e: error: k2e run: this k2e install has no TensorFlow (Python 3.12"
        )
        and "\n" not in proc.stderr.strip()
    )


@pytest.mark.slow
def test_the_example_dags_run_their_tensorflow_steps_in_the_jobs_interpreter(
    airflow312, iris_spec, retraining_spec, example_data, tmp_path
):
    """The one-task job and the retraining DAG publish through python=.venv/bin/python; the
    consumer predicts with what retraining published; nothing in the 3.12 processes ever
    tried to import TensorFlow or numpy."""
    run, db, log = airflow312
    iris = tmp_path / "iris.json"
    iris.write_text(json.dumps(iris_spec))
    job = run(
        "dags", "test", "k2e_iris", "2026-11-01",
        "--conf", json.dumps({"spec": str(iris), "root": str(tmp_path / "one"), "train_steps": 60}),
    )  # fmt: skip
    assert job.returncode == 0, job.output[-3000:]
    assert f"running k2e run in {K2E_PYTHON}" in job.output
    (result,) = _xcom(db, "k2e_iris", "train_and_publish")
    assert (result["version"], result["global_step"]) == (1, 60)
    assert os.path.exists(tmp_path / "one" / "export" / "1" / "saved_model.pb")

    retraining = tmp_path / "retraining.json"
    retraining.write_text(json.dumps(retraining_spec))
    root = tmp_path / "retraining"
    conf = {
        "spec": str(retraining),
        "root": str(root),
        "train_files": str(example_data / "retraining" / "day1.csv"),
        "train_steps": 60,
    }
    daily = run("dags", "test", "k2e_iris_retraining", "2026-11-01", "--conf", json.dumps(conf))
    assert daily.returncode == 0, daily.output[-3000:]
    assert _xcom(db, "k2e_iris_retraining", "publish", "version") == [1]
    assert _xcom(db, "k2e_iris_retraining", "publish", "blessed") == [True]
    assert _xcom(db, "k2e_iris_retraining", "train", "global_step") == [60]
    events = db.execute(
        "SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE a.uri = ?",
        (f"file://{root}/models",),
    ).fetchall()
    assert [json.loads(extra)["version"] for (extra,) in events] == [1]

    consumer = run("dags", "test", "k2e_iris_consumer")
    assert consumer.returncode == 0, consumer.output[-3000:]
    (predicted,) = _xcom(db, "k2e_iris_consumer", "species")
    assert predicted["version"] == 1 and len(predicted["species"]) == 3
    (outputs,) = _xcom(db, "k2e_iris_consumer", "predict")
    assert outputs["export_path"] == f"{root}/models/1"

    lines = log.read_text().splitlines()
    assert len([line for line in lines if line.startswith("watched ")]) >= 4
    assert [line for line in lines if line.startswith("import ")] == []


@pytest.mark.slow
def test_a_missing_interpreter_fails_the_task_once_naming_python(
    airflow312, retraining_spec, example_data, tmp_path
):
    """The retraining DAG retries its tasks twice; a `python` that does not exist is a
    configuration error: one line naming it, the task failed, not up for retry."""
    run, db, _ = airflow312
    spec = tmp_path / "retraining.json"
    spec.write_text(json.dumps(retraining_spec))
    conf = {
        "spec": str(spec),
        "root": str(tmp_path / "retraining"),
        "train_files": str(example_data / "retraining" / "day1.csv"),
    }
    proc = run(
        "dags", "test", "k2e_iris_retraining", "2026-11-05", "--conf", json.dumps(conf),
        K2E_PYTHON="/opt/nowhere/bin/python",
    )  # fmt: skip
    assert "python: /opt/nowhere/bin/python cannot be run (No such file or directory)" in (
        proc.output
    )
    states = dict(
        db.execute(
            "SELECT task_id, state FROM task_instance WHERE run_id = (SELECT run_id FROM "
            "dag_run WHERE dag_id='k2e_iris_retraining' ORDER BY id DESC LIMIT 1)"
        ).fetchall()
    )
    assert states == {  # the first task failed, not up for retry; the others never ran
        "convert": "failed",
        "train": "upstream_failed",
        "evaluate": "upstream_failed",
        "publish": "upstream_failed",
    }
    assert not os.path.exists(tmp_path / "retraining" / "runs")


@pytest.mark.slow
def test_the_keras_trainer_runs_from_the_same_dag_with_python_set_to_its_interpreter(
    airflow312, iris_spec, tmp_path
):
    """The same DAG and operator, `python` set to .venv-keras's interpreter (TensorFlow 2.21,
    Keras 3): the job trains on the Keras trainer and publishes its version."""
    run, db, _ = airflow312
    keras_python = os.path.join(REPO, ".venv-keras", "bin", "python")
    spec = tmp_path / "iris.json"
    spec.write_text(json.dumps({**iris_spec, "trainer": "keras"}))
    conf = {"spec": str(spec), "root": str(tmp_path / "keras"), "train_steps": 60}
    job = run(
        "dags", "test", "k2e_iris", "2026-11-02", "--conf", json.dumps(conf),
        K2E_PYTHON=keras_python,
    )  # fmt: skip
    assert job.returncode == 0, job.output[-3000:]
    assert f"running k2e run in {keras_python}" in job.output
    results = _xcom(db, "k2e_iris", "train_and_publish")
    assert (results[-1]["version"], results[-1]["global_step"]) == (1, 60)
    assert results[-1]["train"]["checkpoint"].endswith("model.ckpt-60")
    assert os.path.exists(tmp_path / "keras" / "export" / "1" / "fingerprint.pb")  # TF 2.21's
