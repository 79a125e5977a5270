"""Warm start: a new model_dir starts from a published version's or a checkpoint's weights."""

from __future__ import annotations

import json
import os

import pytest

from tests.conftest import BUCKET, EXAMPLES


def _model_variables(tf, prefix):
    """{object path: value} of the model's variables in an object-based checkpoint."""
    reader = tf.train.load_checkpoint(prefix)
    return {
        key: reader.get_tensor(key)
        for key in reader.get_variable_to_shape_map()
        if key.startswith("layer_with_weights-") and ".OPTIMIZER_SLOT" not in key
    }


def _same(a, b):
    import numpy as np

    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def _next_run(spec, tmp_path, name, **fields):
    return {**spec, "model_dir": str(tmp_path / name), **fields}


def test_latest_version_seeds_a_new_model_dir_and_is_recorded(iris_spec, tmp_path, tf):
    from k2e_core.steps import job

    first = job.run(iris_spec)
    second = _next_run(iris_spec, tmp_path, "second", warm_start="latest")
    converted = job.convert_step(second)
    # The version's own training checkpoint is still there: its optimizer state comes too.
    assert converted["warm_start"] == {
        "from": "latest",
        "version": 1,
        "url": first["export_path"],
        "optimizer_state": first["train"]["checkpoint"],
    }
    published = _model_variables(tf, os.path.join(first["export_path"], "variables", "variables"))
    starting = _model_variables(
        tf, tf.train.latest_checkpoint(os.path.join(second["model_dir"], "keras"))
    )
    assert published and _same(published, starting)

    result = job.run(second)
    assert result["version"] == 2 and result["warm_start"]["version"] == 1
    with open(result["manifest"]) as f:
        assert json.load(f)["source"]["warm_start"]["version"] == 1
    # The model_dir now has its own checkpoints: a rerun resumes and keeps the record.
    again = job.run(second)
    assert again["reused"] and again["warm_start"] == result["warm_start"]


def test_a_checkpoint_url_or_a_model_dir_seeds_a_new_model_dir(iris_spec, tmp_path, tf):
    from k2e_core.steps import job

    job.train_step(iris_spec)
    ckpt = tf.train.latest_checkpoint(iris_spec["model_dir"])
    for name, source in [("from-dir", iris_spec["model_dir"]), ("from-prefix", ckpt)]:
        spec = _next_run(iris_spec, tmp_path, name, warm_start=source)
        assert job.convert_step(spec)["warm_start"] == {
            "from": "checkpoint",
            "url": ckpt,
            "optimizer_state": ckpt,
        }
        starting = _model_variables(
            tf, tf.train.latest_checkpoint(os.path.join(spec["model_dir"], "keras"))
        )
        assert _same(_model_variables(tf, ckpt), starting)


def test_latest_with_nothing_published_starts_from_the_models_own_weights(iris_spec):
    from k2e_core.steps import job

    result = job.run({**iris_spec, "warm_start": "latest"})
    assert result["version"] == 1 and result["warm_start"] is None


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"warm_start": "latest", "export": None},
            "warm_start: 'latest' names a published version, but the spec has no export section",
        ),
        ({"warm_start": "7"}, "warm_start: no version 7 under"),
        ({"warm_start": "/no/such/model_dir"}, "warm_start: no checkpoint at /no/such/model_dir"),
    ],
)
def test_unusable_sources_are_named(iris_spec, change, message):
    from k2e_core.errors import SpecError
    from k2e_core.steps import job

    spec = {k: v for k, v in {**iris_spec, **change}.items() if v is not None}
    with pytest.raises(SpecError, match=message):
        job.convert_step(spec)


def test_a_checkpoint_of_another_architecture_is_refused_clearly(iris_spec, tmp_path, example_data):
    from k2e_core.errors import SpecError
    from k2e_core.steps import job

    job.train_step(iris_spec)
    other = _next_run(
        iris_spec,
        tmp_path,
        "bow",
        warm_start=iris_spec["model_dir"],
        model={"factory": os.path.join(EXAMPLES, "models.py") + ":bag_of_words_model"},
    )
    with pytest.raises(SpecError) as raised:
        job.convert_step(other)
    assert str(raised.value).startswith(
        f"warm_start: {iris_spec['model_dir']}/model.ckpt-60 "
        "does not fit this model (not in the checkpoint: "
        "posts/kernel, posts/bias, labels/kernel, labels/bias; "
        "only in the checkpoint: dense/kernel, dense/bias, "
        "dense_1/kernel, dense_1/bias)"
    )
    assert "set warm_start=none" in str(raised.value)
    assert not os.path.exists(os.path.join(other["model_dir"], "keras", "k2e-warm-start.json"))

    # A spec that allows it starts fresh instead, and the record says why.
    fresh = job.convert_step({**other, "warm_start_mismatch": "fresh"})
    assert (
        "does not fit this model (not in the checkpoint: posts/kernel"
        in fresh["warm_start"]["skipped"]
    )
    assert fresh["global_step"] == 0


def test_warm_start_carries_the_optimizer_state_of_the_same_model(iris_spec, tmp_path, tf):
    """Adam's moments continue from the source checkpoint: after one step they are
    0.9 * the source's + 0.1 * the new gradient, far from a fresh start's 0.1 * gradient."""
    import numpy as np

    from k2e_core.estimator.keras_checkpoints import checkpoint_variables
    from k2e_core.steps import job

    def first_moment(prefix):
        reader = tf.train.load_checkpoint(prefix)
        return reader.get_tensor(checkpoint_variables(reader)["training/Adam/dense/kernel/m"][0])

    job.train_step(iris_spec)
    source = first_moment(tf.train.latest_checkpoint(iris_spec["model_dir"]))
    drift = {}
    for name, warm in [("warm", iris_spec["model_dir"]), ("fresh", "none")]:
        spec = _next_run(iris_spec, tmp_path, name, warm_start=warm, train={"steps": 1})
        job.convert_step(spec)
        job.train_step(spec)  # another process in a DAG: the state is fetched again there
        after = first_moment(tf.train.latest_checkpoint(spec["model_dir"]))
        drift[name] = np.abs(after - 0.9 * source).mean() / np.abs(source).mean()
    assert drift["warm"] < 0.3 < drift["fresh"]


def test_a_version_whose_training_checkpoint_is_gone_starts_the_optimizer_fresh(
    iris_spec, tmp_path
):
    import shutil

    from k2e_core.steps import job

    job.run(iris_spec)
    shutil.rmtree(iris_spec["model_dir"])
    converted = job.convert_step(_next_run(iris_spec, tmp_path, "second", warm_start="latest"))
    assert (
        converted["warm_start"]["version"] == 1
        and converted["warm_start"]["optimizer_state"] is None
    )


def test_a_version_on_s3_seeds_a_local_model_dir(iris_spec, tmp_path, s3, tf):
    from k2e_core.steps import job

    remote = {
        **iris_spec,
        "export": {"base": f"s3://{BUCKET}/warm/serving"},
        "storage": {"options": s3},
    }
    first = job.run(remote)
    second = _next_run(remote, tmp_path, "second", warm_start="1")
    assert job.convert_step(second)["warm_start"] == {
        "from": "1",
        "version": 1,
        "url": first["export_path"],
        "optimizer_state": first["train"]["checkpoint"],
    }
    starting = _model_variables(
        tf, tf.train.latest_checkpoint(os.path.join(second["model_dir"], "keras"))
    )
    trained = _model_variables(tf, tf.train.latest_checkpoint(iris_spec["model_dir"]))
    assert _same(trained, starting)
