"""Trains, evaluates and publishes the iris classifier in one task: `make run` as a DAG.

One K2eJobOperator runs the whole job (convert, train, evaluate, export) in one process, so
TensorFlow is imported and the model built once: the cheapest way to run a job whose steps
need no retries or XComs of their own (see `k2e_iris_retraining` for the four-task form).
A rerun with the same `root` resumes the model_dir and publishes nothing new.

Params: `spec` (the job spec), `root` (`model/` and `export/` go there; any fsspec URL),
`train_steps`. Without TensorFlow in this Airflow, the job runs in the interpreter named by
$K2E_PYTHON (`python`).
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import DAG, Param

from airflow_plugin.operators.k2e import K2eJobOperator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

with DAG(
    dag_id="k2e_iris",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    default_args={"python": os.environ.get("K2E_PYTHON")},
    params={
        "spec": Param(
            os.path.join(REPO, "examples", "iris.yaml"),
            type="string",
            description="k2e job spec (path or URL)",
        ),
        "root": Param(
            os.path.join(REPO, "out", "airflow", "iris-job"),
            type="string",
            description="model/ and export/ go here (path or URL)",
        ),
        "train_steps": Param(1000, type="integer", minimum=1),
    },
    tags=["k2e", "example"],
    doc_md=__doc__,
):
    K2eJobOperator(
        task_id="train_and_publish",
        spec="{{ params.spec }}",
        overrides={
            "model_dir": "{{ params.root }}/model",
            "export.base": "{{ params.root }}/export",
            "train.steps": "{{ params.train_steps }}",
        },
    )
