"""Retrains the iris example every day and publishes each run's model as a new version.

Each run trains into its own `model_dir` (`<root>/runs/<run time>`), starting from the
weights of the newest published version (the previous run's last checkpoint), evaluates,
and publishes `<root>/models/<version>` with its metrics. Publishing emits an event on
the `k2e-iris-model` asset alias, which schedules `k2e_iris_consumer`.

Params: `spec` (the job spec), `root` (where runs and versions go; any fsspec URL),
`train_steps`. Set `storage_conn_id` on the tasks for credentials to an object store.
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

with DAG(
    dag_id="k2e_iris_retraining",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},
    params={
        "spec": Param(os.path.join(REPO, "examples", "iris.yaml"), type="string",
                      description="k2e job spec (path or URL)"),
        "root": Param(os.environ.get("K2E_IRIS_ROOT", os.path.join(REPO, "out", "airflow", "iris")),
                      type="string", description="runs/ and models/ go here (path or URL)"),
        "train_steps": Param(1000, type="integer", minimum=1),
    },
    tags=["k2e", "example"],
    doc_md=__doc__,
):
    common = {
        "export.base": "{{ params.root }}/models",
        "train.steps": "{{ params.train_steps }}",
        "warm_start": "latest",
    }
    convert = K2eConvertOperator(
        task_id="convert",
        spec="{{ params.spec }}",
        overrides={**common, "model_dir": "{{ params.root }}/runs/"
                   "{{ (logical_date or dag_run.run_after) | ts_nodash }}"},
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
    )
    convert >> train >> evaluate >> publish
