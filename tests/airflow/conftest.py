"""A throwaway Airflow: its own AIRFLOW_HOME with a SQLite metadata DB (`airflow db migrate`),
the repo's dags/ as DAG folder, and the `airflow` CLI run as a subprocess against it.

The environment is set before anything imports Airflow (which reads its config on import).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile

import pytest

from tests.conftest import REPO

AIRFLOW_HOME = tempfile.mkdtemp(prefix="k2e-airflow-")
os.environ.update(
    {
        "AIRFLOW_HOME": AIRFLOW_HOME,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": os.path.join(REPO, "dags"),
    }
)
AIRFLOW = os.path.join(os.path.dirname(sys.executable), "airflow")


@pytest.fixture(scope="session", autouse=True)
def _remove_airflow_home():
    yield
    shutil.rmtree(AIRFLOW_HOME, ignore_errors=True)


def airflow(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Runs the `airflow` CLI of this environment; stdout and stderr together in `.stdout`."""
    return subprocess.run(
        [AIRFLOW, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


@pytest.fixture(scope="session")
def airflow_db():
    """The metadata DB, migrated once per session; a connection for reading it."""
    proc = airflow("db", "migrate")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    db = sqlite3.connect(os.path.join(AIRFLOW_HOME, "airflow.db"))
    yield db
    db.close()


def dags_test(dag_id: str, logical_date: str | None = None, conf: dict | None = None):
    args = ["dags", "test", dag_id]
    if logical_date:
        args.append(logical_date)
    if conf:
        args += ["--conf", json.dumps(conf)]
    proc = airflow(*args)
    proc.output = proc.stdout + proc.stderr
    return proc


_MANUAL_RUNS = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag()
for dag_id, conf in json.loads(sys.argv[1]):
    run = bag.get_dag(dag_id).test(logical_date=None, run_conf=conf)
    print("K2E-RUN " + json.dumps({"dag_id": dag_id, "state": str(run.state),
        "logical_date": run.logical_date and str(run.logical_date),
        "run_after": run.run_after.strftime("%Y%m%dT%H%M%S")}), flush=True)
"""


def manual_runs(*runs: tuple[str, dict]) -> tuple[list[dict], str]:
    """Runs each (dag_id, conf) as a run triggered by hand is in Airflow 3 (`airflow dags
    trigger`, the UI's button): no logical date. One process for all: ([run], output)."""
    proc = subprocess.run(
        [sys.executable, "-c", _MANUAL_RUNS, json.dumps(runs)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("K2E-RUN ")]
    return [json.loads(line[len("K2E-RUN ") :]) for line in lines], output
