"""Runs whenever `k2e_iris_retraining` publishes a version: loads it and predicts.

Scheduled on the `k2e-iris-model` asset alias. The event's extra names the version and
its location; a run started by hand uses the newest event recorded for the alias.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, AssetAlias, task
from airflow.sdk.exceptions import AirflowFailException

MODEL = AssetAlias(name="k2e-iris-model")

# Three flowers (sepal length, sepal width, petal length, petal width) in cm.
FLOWERS = [[5.1, 3.5, 1.4, 0.2], [6.4, 3.2, 4.5, 1.5], [6.9, 3.1, 5.4, 2.1]]

with DAG(
    dag_id="k2e_iris_consumer",
    schedule=MODEL,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["k2e", "example"],
    doc_md=__doc__,
):

    @task(inlets=[MODEL])
    def predict(*, triggering_asset_events=None, inlet_events=None) -> dict:
        from k2e_core.estimator.serving import predict_version

        events = [e for evs in (triggering_asset_events or {}).values() for e in evs]
        if not events:  # started by hand: the newest event recorded for the alias
            recorded = inlet_events[MODEL]
            if not len(recorded):
                raise AirflowFailException(
                    "no version was published on k2e-iris-model yet: run k2e_iris_retraining first"
                )
            events = [recorded[-1]]
        event = events[-1]
        outputs = predict_version(event.extra["export_path"], FLOWERS)["outputs"]
        scores = next(iter(outputs.values()))
        species = [max(range(len(row)), key=row.__getitem__) for row in scores]
        print(f"version {event.extra['version']} predicts species {species} for {FLOWERS}")
        return {"version": event.extra["version"], "species": species}

    predict()
