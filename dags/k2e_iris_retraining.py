"""Retrains the iris classifier every day; publishes the new model only if it is better.

Each run trains on that day's data (`train_files`) in its own `model_dir`
(`<root>/runs/<run time>`), starting from the latest blessed version. The evaluate task
runs the spec's gate: the candidate must meet its thresholds and not regress against that
version, both measured on the same eval data in this run. The publish task then publishes
a blessed candidate as `<root>/models/<version>`, with an event on the `k2e-iris-model`
asset alias (which schedules `k2e_iris_consumer`), or keeps an unblessed one under
`<root>/models/candidates/` with the reason, and no event: that publish task ends as
skipped, with the gate's reason in its log. A retried run (same logical date) gets the same
decision and at most one version. The publish task writes the run's `k2e report` and links
it, with TensorBoard (`[k2e] tensorboard_url`) and the published version.

Params: `spec` (the job spec), `root` (where runs and versions go; any fsspec URL),
`train_files` (this run's training data), `train_steps`. Credentials to an object store:
the Airflow connection named by $K2E_STORAGE_CONN_ID (a `k2e_storage`, `aws` or
`google_cloud_platform` connection), given to every task as `storage_conn_id`. An Airflow
without TensorFlow (its Python 3.12 images) runs the steps in the interpreter named by
$K2E_PYTHON (a Python 3.11 virtualenv with k2e[tensorflow]), given to every task as `python`.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import DAG, Param

from airflow_plugin.operators.k2e import (
    K2eConvertOperator,
    K2eEvaluateOperator,
    K2eExportOperator,
    K2eTrainOperator,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Runs triggered by hand have no logical date (and no `ds`, `ts`...): their run_after instead.
RUN = "{{ (dag_run.logical_date or dag_run.run_after) | ts_nodash }}"

with DAG(
    dag_id="k2e_iris_retraining",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={
        "retries": 2,
        "retry_delay": timedelta(minutes=1),
        "storage_conn_id": os.environ.get("K2E_STORAGE_CONN_ID"),
        "python": os.environ.get("K2E_PYTHON"),
    },
    params={
        "spec": Param(
            os.path.join(REPO, "examples", "iris_retraining.yaml"),
            type="string",
            description="k2e job spec with a gate (path or URL)",
        ),
        "root": Param(
            os.environ.get("K2E_IRIS_ROOT", os.path.join(REPO, "out", "airflow", "iris")),
            type="string",
            description="runs/ and models/ go here (path or URL)",
        ),
        "train_files": Param(
            os.path.join(REPO, "examples", "data", "retraining", "day1.csv"),
            type="string",
            description="this run's training data (URL or glob), "
            "e.g. s3://bucket/iris/2026-11-01/*.csv",
        ),
        "train_steps": Param(300, type="integer", minimum=1),
    },
    tags=["k2e", "example"],
    doc_md=__doc__,
):
    common = {
        "export.base": "{{ params.root }}/models",
        "data.train.files": "{{ params.train_files }}",
        "train.steps": "{{ params.train_steps }}",
        "warm_start": "latest",
        "run_id": f"{{{{ dag.dag_id }}}}-{RUN}",
    }
    convert = K2eConvertOperator(
        task_id="convert",
        spec="{{ params.spec }}",
        overrides={**common, "model_dir": f"{{{{ params.root }}}}/runs/{RUN}"},
    )
    train = K2eTrainOperator(
        task_id="train",
        spec="{{ params.spec }}",
        overrides={**common, "model_dir": convert.output["model_dir"]},
    )
    evaluate = K2eEvaluateOperator(
        task_id="evaluate",
        spec="{{ params.spec }}",
        overrides={**common, "model_dir": train.output["model_dir"]},
    )
    publish = K2eExportOperator(
        task_id="publish",
        spec="{{ params.spec }}",
        overrides={**common, "model_dir": train.output["model_dir"]},
        metrics=evaluate.output["metrics"],
        model_asset_alias="k2e-iris-model",
        report=True,
    )
    convert >> train >> evaluate >> publish
