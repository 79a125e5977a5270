"""Pre-made Estimators: the baseline a Keras candidate must beat, and a pre-made model of its
own. Checked against what k2e did not write: public data shipped in packages (palmerpenguins,
scikit-learn) read by pandas, the pre-made Estimators' own predictions on rows pandas feeds
them, and TF Serving's signature method names as the SavedModel stores them."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tests import real_data
from tests.conftest import EXAMPLES, iris_job
from tests.core.test_cli import _main, _write
from tests.real_data import PENGUIN_MEASUREMENTS

IRIS_COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def _accuracy_fed_by_pandas(baseline_dir, kind, features: dict, labels) -> float:
    """The accuracy of a pre-made baseline's latest checkpoint on rows pandas read, fed
    straight to the Estimator's predict (not through k2e's input pipeline)."""
    import tensorflow as tf

    from k2e_core.estimator import premade
    from k2e_core.spec import BaselineSpec

    design = premade.load_design(baseline_dir)
    estimator = premade.estimator(
        design, BaselineSpec(kind=kind), tf.estimator.RunConfig(model_dir=baseline_dir)
    )
    predicted = [
        p["classes"][0].decode() if design.label_vocabulary else int(p["class_ids"][0])
        for p in estimator.predict(lambda: tf.data.Dataset.from_tensor_slices(features).batch(64))
    ]
    return float(np.mean(np.asarray(predicted) == np.asarray(labels)))


def test_a_weak_candidate_loses_to_the_linear_baseline(example_data, tmp_path, capsys):
    """The guide's workflow on iris: a LinearClassifier trained beside a Keras model that
    was given 20 steps. The gate rejects the candidate naming both accuracies; the
    baseline's metrics are in the result, the version record, `k2e registry list` and
    TensorBoard, and are what the baseline predicts for the rows pandas reads."""
    import pandas as pd

    from k2e_core import registry
    from k2e_core.steps import job

    spec = dict(
        iris_job(example_data, tmp_path),
        train={"steps": 20},
        baseline={"kind": "linear", "steps": 400},
        gate={"metrics": {"accuracy": {"vs_baseline": {"tolerance": 0.0}}}},
    )
    result = job.run(spec)

    baseline = result["premade_baseline"]
    assert baseline["estimator"] == "LinearClassifier" and baseline["global_step"] == 400
    assert baseline["steps_trained"] == 400 and baseline["train_seconds"] > 0
    candidate, beaten = result["metrics"]["accuracy"], baseline["metrics"]["accuracy"]
    assert candidate < beaten
    assert not result["blessed"] and result["version"] is None
    assert result["reason"] == (
        f"accuracy {candidate:.4g} < {beaten:.4g} "
        f"(pre-made baseline LinearClassifier: {beaten:.4g}, with tolerance)"
    )

    frame = pd.read_csv(example_data / "iris_test.csv")
    by_pandas = _accuracy_fed_by_pandas(
        os.path.join(spec["model_dir"], "baseline"),
        "linear",
        {"dense_input": frame[IRIS_COLUMNS].to_numpy(np.float32)},
        frame["species"].to_numpy(),
    )
    assert beaten == pytest.approx(by_pandas, abs=1e-6)

    (record,) = registry.entries(spec["export"]["base"])
    assert record["gate"]["premade_baseline"]["metrics"]["accuracy"] == beaten
    assert record["gate"]["checks"][0]["premade_value"] == beaten
    code, out, _ = _main(["registry", "list", _write(tmp_path, spec)], capsys)
    assert code == 0
    header, row = out.strip().splitlines()[:2]
    assert "pre-made baseline" in header
    assert f"LinearClassifier accuracy {beaten:.4f}" in row

    from tests.core.test_tensorboard import scalars

    curve = scalars(os.path.join(spec["model_dir"], "baseline", "eval"))
    assert curve["accuracy"][-1] == (400, pytest.approx(beaten))


@pytest.mark.slow
def test_penguins_step_by_step_with_a_dnn_baseline(tmp_path):
    """palmerpenguins as shipped (species as text, text and integer inputs, NA cells
    dropped): the train step trains the DNNClassifier baseline on its own budget after the
    model, evaluate measures it on the eval data, export publishes with the baseline in the
    record; its accuracy is what it predicts for the rows pandas reads."""
    from k2e_core import registry
    from k2e_core.steps import job

    frame = real_data.penguins()
    train_rows, eval_rows = frame.iloc[::2], frame.iloc[1::2]
    train_rows.to_csv(tmp_path / "train.csv", index=False)
    eval_rows.to_csv(tmp_path / "eval.csv", index=False)
    spec = {
        "model": {"factory": real_data.factory("penguin_mixed_model")},
        "model_dir": str(tmp_path / "model"),
        "data": {
            "train": {"files": str(tmp_path / "train.csv")},
            "eval": {"files": str(tmp_path / "eval.csv")},
            "features": {
                "island": "island",
                "sex": "sex",
                "year": "year",
                "measurements": PENGUIN_MEASUREMENTS,
            },
            "labels": "species",
            "missing": "drop",
        },
        "train": {"steps": 200},
        "eval": {"every_steps": "end"},
        "run_config": {"tf_random_seed": 1},
        "baseline": {"kind": "dnn", "steps": 150, "optimizer": "Adam", "learning_rate": 0.01},
        "export": {"base": str(tmp_path / "export")},
        "gate": {"metrics": {"accuracy": {"vs_baseline": {"tolerance": 0.05}}}},
    }
    trained = job.train_step(spec)
    assert trained["global_step"] == 200
    assert trained["premade_baseline"]["estimator"] == "DNNClassifier"
    assert trained["premade_baseline"]["global_step"] == 150

    evaluated = job.evaluate_step(spec)
    measured = evaluated["premade_baseline"]["metrics"]
    assert measured["accuracy"] > 0.9
    clean = eval_rows.dropna(subset=["island", "sex", "year", *PENGUIN_MEASUREMENTS])
    by_pandas = _accuracy_fed_by_pandas(
        os.path.join(spec["model_dir"], "baseline"),
        "dnn",
        {
            "island": clean[["island"]].to_numpy(),
            "sex": clean[["sex"]].to_numpy(),
            "year": clean[["year"]].to_numpy(np.int64),
            "measurements": clean[PENGUIN_MEASUREMENTS].to_numpy(np.float32),
        },
        clean["species"].to_numpy(),
    )
    assert measured["accuracy"] == pytest.approx(by_pandas, abs=1e-6)

    exported = job.export_step(spec, metrics=evaluated["metrics"])
    assert exported["blessed"] and exported["version"] == 1
    (record,) = registry.entries(spec["export"]["base"])
    assert record["gate"]["premade_baseline"]["metrics"]["accuracy"] == measured["accuracy"]


def _signature_methods(version_dir) -> dict:
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(version_dir, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    return {
        name: (s.method_name, sorted(s.inputs))
        for name, s in saved.meta_graphs[0].signature_def.items()
    }


@pytest.mark.slow
def test_a_premade_model_is_published_and_served(tmp_path, capsys):
    """`model.premade` on palmerpenguins as shipped (every column but the label is an input,
    NA filled): `k2e run` publishes a SavedModel whose serving_default is TF Serving's
    Classify on tf.Examples, with a raw signature beside it; k2e's predict check answers both
    alike, a tf.Example without `sex` gets the fill; a second run is judged against version 1
    measured on the same eval data."""
    from k2e_core.estimator.serving import predict_version

    spec = {
        "model": {"premade": {"kind": "linear"}},
        "model_dir": str(tmp_path / "model"),
        "data": {
            "train": {"files": real_data.penguins_csv()},
            "labels": "species",
            "missing": {
                "sex": "most_frequent",
                **{c: "median" for c in PENGUIN_MEASUREMENTS},
            },
        },
        "train": {"steps": 300},
        "eval": {"every_steps": "end"},
        "run_config": {"tf_random_seed": 1},
        "export": {"base": str(tmp_path / "export")},
        "gate": {"metrics": {"accuracy": {"at_least": 0.9, "tolerance": 0.02}}},
    }
    code, out, err = _main(["run", _write(tmp_path, spec)], capsys)
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["version"] == 1 and result["metrics"]["accuracy"] > 0.9
    methods = _signature_methods(result["export_path"])
    assert methods["serving_default"] == ("tensorflow/serving/classify", ["inputs"])
    assert methods["classification"][0] == "tensorflow/serving/classify"
    assert methods["raw:predict"] == (
        "tensorflow/serving/predict",
        sorted(["island", "sex", "year", *PENGUIN_MEASUREMENTS]),
    )

    rows = {
        "island": ["Torgersen", "Biscoe"],
        "bill_length_mm": [39.1, 46.5],
        "bill_depth_mm": [18.7, 13.5],
        "flipper_length_mm": [181, 210],
        "body_mass_g": [3750, 4550],
        "sex": ["male", "female"],
        "year": [2007, 2009],
    }
    classified = predict_version(result["export_path"], rows)["outputs"]
    best = [
        names[int(np.argmax(s))] for names, s in zip(classified["classes"], classified["scores"])
    ]
    assert best == ["Adelie", "Gentoo"]
    raw = predict_version(
        result["export_path"], {k: [[v] for v in vs] for k, vs in rows.items()}, "raw:predict"
    )["outputs"]
    assert np.allclose(raw["probabilities"], classified["scores"], atol=1e-6)
    without_sex = {k: v for k, v in rows.items() if k != "sex"}
    assert predict_version(result["export_path"], without_sex)["outputs"]["scores"]

    spec["model_dir"] = str(tmp_path / "model-2")
    code, out, err = _main(["run", _write(tmp_path, spec)], capsys)
    assert code == 0, err
    second = json.loads(out.strip().splitlines()[-1])
    compared = [c for c in second["gate"]["checks"] if c.get("baseline") == 1]
    assert compared and compared[0]["baseline_value"] == pytest.approx(
        result["metrics"]["accuracy"]
    )


def test_a_premade_regressor_serves_tf_servings_regress_api(tmp_path):
    """scikit-learn's diabetes data as pandas writes it, a DNNRegressor on every column: the
    version's serving_default is Regress on tf.Examples, and its loss beats predicting the
    mean."""
    from k2e_core.steps import job

    frame = real_data.sklearn_frame("diabetes")
    frame.iloc[:350].to_csv(tmp_path / "train.csv", index=False)
    frame.iloc[350:].to_csv(tmp_path / "eval.csv", index=False)
    result = job.run(
        {
            "model": {"premade": {"kind": "dnn", "optimizer": "Adam", "learning_rate": 0.05}},
            "model_dir": str(tmp_path / "model"),
            "data": {
                "train": {"files": str(tmp_path / "train.csv")},
                "eval": {"files": str(tmp_path / "eval.csv")},
                "labels": "target",
            },
            "train": {"steps": 400},
            "eval": {"every_steps": "end"},
            "run_config": {"tf_random_seed": 1},
            "export": {"base": str(tmp_path / "export")},
        }
    )
    methods = _signature_methods(result["export_path"])
    assert methods["serving_default"] == ("tensorflow/serving/regress", ["inputs"])
    assert "raw:predict" in methods
    variance = float(frame.iloc[350:]["target"].var(ddof=0))
    assert result["metrics"]["average_loss"] < 0.7 * variance


def test_validate_refuses_a_baseline_for_a_model_with_two_outputs(example_data, capsys):
    """A pre-made Estimator has one head: said before any training."""
    import yaml

    with open(os.path.join(EXAMPLES, "two_io.yaml")) as f:
        spec = yaml.safe_load(f)
    spec["model"]["factory"] = (
        os.path.join(EXAMPLES, "models.py") + ":" + (spec["model"]["factory"].split(":")[1])
    )
    spec["data"]["train"]["files"] = str(example_data / "two_io_train.npz")
    spec["data"]["eval"]["files"] = str(example_data / "two_io_test.npz")
    spec["baseline"] = {"kind": "linear"}
    from k2e_core.errors import SpecError
    from k2e_core.steps import job

    with pytest.raises(SpecError) as caught:
        job.validate(spec)
    assert str(caught.value).startswith(
        "baseline: a pre-made Estimator has one head; the model has 2 outputs"
    )


def test_a_baseline_that_fails_to_train_fails_the_job_and_publishes_nothing(
    example_data, tmp_path, capsys
):
    """Not a silent pass: a baseline whose loss turns NaN stops `k2e run` with one line
    naming it, after the model trained, before anything is judged or published."""
    from tests.core.test_cli import problem_lines

    spec = dict(
        iris_job(example_data, tmp_path),
        baseline={"kind": "dnn", "optimizer": "SGD", "learning_rate": 1e30},
        gate={"metrics": {"accuracy": {"vs_baseline": {}}}},
    )
    code, out, err = _main(["run", _write(tmp_path, spec)], capsys)
    (line,) = problem_lines(err)
    assert code == 3 and out == ""
    assert line.startswith(
        "k2e: failed: baseline DNNClassifier: training diverged: the loss is NaN"
    )
    assert not os.path.exists(tmp_path / "export" / "1")
    assert not os.path.exists(tmp_path / "export" / "candidates")
