"""Runs whenever `k2e_iris_retraining` publishes a version: predicts with it.

Scheduled on the `k2e-iris-model` asset alias. The event's extra names the version and its
location; a run started by hand uses the newest event recorded for the alias. The predict
task loads the version with TensorFlow: in this worker, or, in an Airflow without TensorFlow
(its Python 3.12 images), in the interpreter named by $K2E_PYTHON.
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import DAG, AssetAlias, task

from airflow_plugin.operators.k2e import K2ePredictOperator

MODEL = AssetAlias(name="k2e-iris-model")

# Three flowers (sepal length, sepal width, petal length, petal width) in cm.
FLOWERS = [[5.1, 3.5, 1.4, 0.2], [6.4, 3.2, 4.5, 1.5], [6.9, 3.1, 5.4, 2.1]]

with DAG(
    dag_id="k2e_iris_consumer",
    schedule=MODEL,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    default_args={"python": os.environ.get("K2E_PYTHON")},
    tags=["k2e", "example"],
    doc_md=__doc__,
):
    predicted = K2ePredictOperator(task_id="predict", model_asset_alias=MODEL.name, inputs=FLOWERS)

    @task
    def species(result: dict) -> dict:
        scores = next(iter(result["outputs"].values()))
        best = [max(range(len(row)), key=row.__getitem__) for row in scores]
        print(f"version {result['version']} predicts species {best} for {FLOWERS}")
        return {"version": result["version"], "species": best}

    species(predicted.output)
