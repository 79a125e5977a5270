"""What the training data decided (class names, fill values) is kept with the model_dir on
every back end: later steps, in other processes, use it and not their own data's."""

from __future__ import annotations

import json

import pytest

from tests import real_data
from tests.real_data import PENGUIN_MEASUREMENTS, factory


def test_later_steps_use_the_recorded_vocabulary_and_fills(location, tmp_path):
    from k2e_core import storage
    from k2e_core.steps import job

    base, options = location
    frame = real_data.penguins()
    frame.to_csv(tmp_path / "train.csv", index=False)
    # Evaluation data without one class and with other values: deriving from it would
    # give two classes and other fills.
    frame[frame.species != "Chinstrap"].iloc[::2].to_csv(tmp_path / "eval.csv", index=False)
    spec = {
        "model": {"factory": factory("penguin_model")},
        "model_dir": f"{base}/model",
        "data": {
            "train": {"files": str(tmp_path / "train.csv")},
            "features": {"measurements": PENGUIN_MEASUREMENTS},
            "labels": "species",
            "missing": {c: "median" for c in PENGUIN_MEASUREMENTS},
        },
        "train": {"steps": 100},
        "run_config": {"tf_random_seed": 1},
        "storage": {"options": options},
    }
    job.train_step(spec)
    with storage.configured(options):
        recorded = json.loads(storage.read_bytes(f"{base}/model/keras/k2e-data.json"))
    assert recorded["label_vocabulary"] == {"species": ["Adelie", "Chinstrap", "Gentoo"]}
    assert recorded["fills"]["bill_length_mm"] == pytest.approx(frame.bill_length_mm.median())

    later = dict(
        spec,
        data=dict(
            spec["data"],
            train={"files": str(tmp_path / "eval.csv")},
            eval={"files": str(tmp_path / "eval.csv")},
        ),
    )
    evaluated = job.evaluate_step(later)
    assert evaluated["confusion_matrix"]["categories"] == ["Adelie", "Chinstrap", "Gentoo"]
    assert evaluated["metrics"]["accuracy"] > 0.8
