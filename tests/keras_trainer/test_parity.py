"""The same job on both trainers: the Estimator trainer (TensorFlow 2.15, .venv) and the Keras
trainer (TensorFlow 2.21, Keras 3, .venv-keras), each through its own `k2e run`, as a team
moving a model line would run them. Metrics within noise of each other and of Keras 3 `fit`
on the same rows, the same record fields, the same signatures, and one tf.Example request
answered alike by both trainers' versions of the same weights."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from tests import real_data
from tests.conftest import EXAMPLES, example_spec
from tests.keras_trainer.conftest import k2e, signature_defs

pytestmark = pytest.mark.slow

#: How far apart two trainings of one model may land: they start from different initial
#: weights (Keras 2 and Keras 3 draw them differently from the same seed) and, on these
#: small eval sets, one row is 0.03 (iris, 30 rows) of accuracy.
ACCURACY_NOISE = 0.1


def _both(spec: dict, tmp_path) -> dict:
    """{trainer: (run result, version record, manifest)} of `k2e run` on each trainer."""
    out = {}
    for trainer in ("estimator", "keras"):
        root = tmp_path / trainer
        job = {
            **spec,
            "trainer": trainer,
            "model_dir": str(root / "model"),
            "export": {**spec["export"], "base": str(root / "export")},
        }
        code, done, err = k2e("run", job, tmp_path, trainer=trainer)
        assert code == 0, err
        with open(os.path.join(done["export_path"], "k2e-record.json")) as f:
            record = json.load(f)
        with open(done["manifest"]) as f:
            manifest = json.load(f)
        out[trainer] = (done, record, manifest)
    return out


def _keys(value, prefix="") -> set[str]:
    """Every key path of a JSON document (what a consumer of the records reads)."""
    if isinstance(value, dict):
        return {f"{prefix}{k}" for k in value} | {
            p for k, v in value.items() for p in _keys(v, f"{prefix}{k}.")
        }
    return set()


def _same_records(runs: dict) -> None:
    (e_done, e_record, e_manifest), (k_done, k_record, k_manifest) = (
        runs["estimator"],
        runs["keras"],
    )
    ignore = ("train.rows_dropped",)  # only where rows were dropped
    assert _keys(e_done) - set(ignore) == _keys(k_done) - set(ignore)
    assert _keys(e_record) == _keys(k_record)
    # the same manifest, over files TensorFlow names as it will: TF 2.21 adds fingerprint.pb
    # and shards the variables in one file rather than two
    assert set(e_manifest) == set(k_manifest)
    for manifest in (e_manifest, k_manifest):
        assert {"saved_model.pb", "variables/variables.index"} <= set(manifest["files"])
        assert all(set(f) == {"md5", "sha256", "size"} for f in manifest["files"].values())
    assert e_done["signatures"] == k_done["signatures"]
    assert signature_defs(e_done["export_path"]) == signature_defs(k_done["export_path"])


def _close(runs: dict, keras_fit: dict | None = None) -> None:
    e = runs["estimator"][0]["metrics"]
    k = runs["keras"][0]["metrics"]
    assert set(e) == set(k)
    for name in e:
        if "accuracy" in name or name.startswith("acc"):
            assert abs(e[name] - k[name]) <= ACCURACY_NOISE, (name, e[name], k[name])
            if keras_fit is not None:
                assert abs(k[name] - keras_fit[name]) <= ACCURACY_NOISE, (name, keras_fit)


def _keras_fit(factory, x, y, steps, batch_size, x_eval, y_eval) -> dict:
    """Keras 3 `fit` for `steps` batches on the same rows, then `evaluate`: what a user would
    run instead."""
    import keras

    keras.backend.clear_session()
    model = factory()
    dataset = (
        __import__("tensorflow")
        .data.Dataset.from_tensor_slices((x, y))
        .shuffle(10000, seed=1)
        .repeat()
        .batch(batch_size)
    )
    model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0)
    return model.evaluate(x_eval, y_eval, batch_size=batch_size, return_dict=True, verbose=0)


def test_iris_the_same_on_both_trainers_and_as_keras_fit(example_data, tmp_path):
    import pandas as pd

    spec = example_spec("iris", "iris_model", example_data, "iris")
    runs = _both(spec, tmp_path)
    _same_records(runs)

    import importlib.util

    loader = importlib.util.spec_from_file_location("iris_models", EXAMPLES + "/models.py")
    models = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(models)
    columns = spec["data"]["features"]["dense_input"]
    train = pd.read_csv(example_data / "iris_train.csv")
    test = pd.read_csv(example_data / "iris_test.csv")
    fit = _keras_fit(
        models.iris_model,
        train[columns].to_numpy(np.float32),
        train.species.to_numpy(),
        spec["train"]["steps"],
        spec["data"]["batch_size"],
        test[columns].to_numpy(np.float32),
        test.species.to_numpy(),
    )
    _close(runs, fit)
    assert runs["keras"][0]["metrics"]["accuracy"] > 0.7


NOTES_FEATURES = {
    "island": "island",
    "sex": "sex",
    "year": "year",
    "notes": "notes",
    "measurements": real_data.PENGUIN_MEASUREMENTS[:3],
    "body_mass_g": "body_mass_g",
}


def test_penguins_text_labels_and_adapted_layers_the_same_on_both_trainers(tmp_path):
    """StringLookup, IntegerLookup, TextVectorization, Normalization, Discretization and
    Hashing adapted on the penguins; species as text: both trainers' versions return the
    class names, from one tf.Example request."""
    frame = real_data.penguin_notes()
    path = tmp_path / "penguins.csv"
    frame.to_csv(path, index=False)
    spec = {
        "model": {
            "factory": real_data.factory("penguin_adapted_model"),
            "export_outputs": {
                "serving_default": {"kind": "predict"},
                "classification": {"kind": "classification", "output": "species"},
            },
        },
        "data": {
            "train": {"files": str(path)},
            "eval": {"files": str(path)},
            "features": NOTES_FEATURES,
            "labels": "species",
            "batch_size": 32,
        },
        "train": {"steps": 300},
        "run_config": {"tf_random_seed": 1},
        "export": {"base": "unused", "serving_input": "tf_example"},
    }
    runs = _both(spec, tmp_path)
    _same_records(runs)
    _close(runs)
    for trainer in ("estimator", "keras"):
        assert runs[trainer][0]["metrics"]["accuracy"] > 0.95, trainer
    sigs = signature_defs(runs["keras"][0]["export_path"])
    assert sigs["classification"] == (
        "tensorflow/serving/classify",
        ["inputs"],
        ["classes", "scores"],
    )
    assert sigs["serving_default"] == ("tensorflow/serving/predict", ["examples"], ["species"])

    from k2e_core.tf_runtime import tf

    request = _examples(frame.head(20))
    answers = {}
    for trainer in ("estimator", "keras"):
        served = tf.saved_model.load(runs[trainer][0]["export_path"]).signatures["classification"]
        answers[trainer] = served(inputs=tf.constant(request))
    for trainer, answer in answers.items():
        classes = answer["classes"].numpy()[0].astype(str).tolist()
        assert classes == ["Adelie", "Chinstrap", "Gentoo"], trainer
        predicted = np.array(classes)[answer["scores"].numpy().argmax(axis=1)]
        assert (predicted == frame.head(20).species.to_numpy()).mean() > 0.9, trainer


def _examples(rows) -> list[bytes]:
    from k2e_core import signatures

    columns = {}
    for name, cols in NOTES_FEATURES.items():
        values = rows[cols if isinstance(cols, list) else [cols]].to_numpy()
        if values.dtype == object:
            values = np.vectorize(lambda v: str(v).encode(), otypes=[object])(values)
        columns[name] = values
    return signatures.serialized_examples(columns)


def test_a_multi_output_model_the_same_on_both_trainers(example_data, tmp_path):
    """Two inputs, two softmax heads, metric_names_map and a classification head on raw
    tensors (a predict signature of `scores`, as the Estimator writes it)."""
    spec = example_spec("two_io", "two_input_two_output_model", example_data, "two_io")
    runs = _both(spec, tmp_path)
    _same_records(runs)
    _close(runs)
    metrics = runs["keras"][0]["metrics"]
    assert {"loss", "dense_2_loss", "dense_3_loss", "acc_1", "acc_2"} <= set(metrics)


@pytest.fixture(scope="module")
def estimator_line(example_data, tmp_path_factory):
    """The iris example trained 300 steps and published as version 1 by the Estimator
    trainer, in .venv: (its spec, the run's result). The tests only read it."""
    root = tmp_path_factory.mktemp("estimator-line")
    spec = example_spec("iris", "iris_model", example_data, "iris")
    spec["train"]["steps"] = 300
    spec.update(trainer="estimator", model_dir=str(root / "estimator"))
    spec["export"]["base"] = str(root / "export")
    code, done, err = k2e("run", spec, root, trainer="estimator")
    assert code == 0, err
    return spec, done


def test_a_version_the_estimator_trainer_published_warm_starts_the_keras_trainer(
    estimator_line, tmp_path
):
    """The migration path: the Keras trainer starts a model line from the Estimator trainer's
    version, with Adam's moments from the checkpoint it was exported from; published at once
    (step 0), it answers a tf.Example request as that version does."""
    first, done = estimator_line
    spec = {**first, "export": {**first["export"], "base": str(tmp_path / "export")}}
    shutil.copytree(first["export"]["base"], spec["export"]["base"])  # the line goes on here

    moved = {
        **spec,
        "trainer": "keras",
        "model_dir": str(tmp_path / "keras"),
        "warm_start": "latest",
        "model": {**spec["model"], "factory_kwargs": {"seed": 9}},  # other initial weights
    }
    code, converted, err = k2e("convert", moved, tmp_path)
    assert code == 0, err
    assert converted["warm_start"]["version"] == 1 and converted["global_step"] == 0
    assert converted["warm_start"]["optimizer_state"].endswith("estimator/model.ckpt-300")
    _assert_adam_moments_carried(
        os.path.join(first["model_dir"], "model.ckpt-300"),
        os.path.join(moved["model_dir"], "model.ckpt-0"),
    )
    code, evaluated, err = k2e("evaluate", moved, tmp_path)
    assert code == 0, err
    assert evaluated["metrics"]["accuracy"] == pytest.approx(done["metrics"]["accuracy"])
    assert evaluated["metrics"]["loss"] == pytest.approx(done["metrics"]["loss"], rel=1e-5)
    code, exported, err = k2e("export", {**moved, "run_id": "moved"}, tmp_path)
    assert code == 0, err
    assert exported["version"] == 2 and exported["global_step"] == 0

    from k2e_core import signatures
    from k2e_core.tf_runtime import tf

    rows = {"dense_input": np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], np.float32)}
    request = tf.constant(signatures.serialized_examples(rows))
    answers = [
        tf.saved_model.load(os.path.join(spec["export"]["base"], str(v)))
        .signatures["classification"](inputs=request)["scores"]
        .numpy()
        for v in (1, 2)
    ]
    np.testing.assert_allclose(answers[0], answers[1], atol=1e-5)


def _assert_adam_moments_carried(estimator_checkpoint: str, keras_checkpoint: str) -> None:
    """Every Adam moment of the Estimator trainer's checkpoint (Keras 2 slots `m`, `v`) is
    one of the Keras trainer's optimizer variables, whose step count is 0."""
    from k2e_core.tf_runtime import tf

    source = tf.train.load_checkpoint(estimator_checkpoint)
    seeded = tf.train.load_checkpoint(keras_checkpoint)
    step = "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"
    assert seeded.get_tensor(step) == 0
    moments = [
        source.get_tensor(name)
        for name in source.get_variable_to_shape_map()
        if "/.OPTIMIZER_SLOT/optimizer/" in name
    ]
    assert len(moments) == 8  # m and v of both layers' kernel and bias
    state = [
        seeded.get_tensor(name)
        for name in seeded.get_variable_to_shape_map()
        if name.startswith("optimizer/_variables/")
    ]
    for moment in moments:
        assert np.abs(moment).max() > 0
        assert any(v.shape == moment.shape and np.array_equal(v, moment) for v in state)


def test_a_model_dir_of_the_estimator_trainer_is_refused_and_warm_starts_instead(
    estimator_line, tmp_path
):
    """Pointing the Keras trainer at the Estimator trainer's model_dir stops in one line
    saying how to start from it; warm_start from that model_dir does."""
    spec, done = estimator_line
    spec = {**spec, "export": None}
    before = sorted(os.listdir(spec["model_dir"]))

    code, _, err = k2e("train", {**spec, "trainer": "keras"}, tmp_path)
    assert code == 2 and err.strip().splitlines()[-1].startswith(
        "k2e: error: model_dir: model.ckpt-300 is not a checkpoint of this model on the keras"
    )
    assert "warm_start" in err and sorted(os.listdir(spec["model_dir"])) == before

    moved = {**spec, "trainer": "keras", "model_dir": str(tmp_path / "keras")}
    moved["warm_start"] = spec["model_dir"]
    code, evaluated, err = k2e("evaluate", {**moved, "train": {"steps": 1}}, tmp_path)
    assert code == 0, err
    assert evaluated["global_step"] == 0
    assert evaluated["metrics"]["loss"] == pytest.approx(done["metrics"]["loss"], rel=1e-5)
