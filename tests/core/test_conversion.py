"""k2e_core.convert: the API doc's contract, and the upstream defects it fixes.

Every defect test also runs against plain `model_to_estimator` as a strict xfail: if
upstream ever passes one, the test no longer proves anything and the suite says so.
"""

from __future__ import annotations

import glob
import os

import numpy as np
import pytest

from tests.conftest import bn_data


def _upstream(*args, **kwargs):
    from tensorflow_estimator.python.estimator import keras_lib

    return keras_lib.model_to_estimator(*args, **kwargs)


def _k2e(*args, **kwargs):
    import k2e_core

    return k2e_core.convert(*args, **kwargs)


@pytest.fixture(
    params=[
        "k2e",
        pytest.param("upstream", marks=pytest.mark.xfail(strict=True, reason="upstream defect")),
    ]
)
def converter(request, tf):
    return _k2e if request.param == "k2e" else _upstream


def _bn_model(tf, optimizer=None):
    model = tf.keras.Sequential(
        [
            tf.keras.layers.Dense(8, input_shape=(4,), name="d"),
            tf.keras.layers.BatchNormalization(name="bn"),
            tf.keras.layers.Dense(1, activation="sigmoid", name="out"),
        ]
    )
    model.compile(
        optimizer=optimizer or tf.keras.optimizers.legacy.Adam(0.01),
        loss="binary_crossentropy",
        metrics=["accuracy"],
    )
    return model


def _input_fn(tf, x, y, key="d_input", repeat=False, batch=256):
    def fn():
        ds = tf.data.Dataset.from_tensor_slices(({key: x}, y)).batch(batch)
        return ds.repeat() if repeat else ds

    return fn


def _two_io_input_fn(tf, gen, rows=64):
    data = gen.two_io(rows, seed=3)

    def fn():
        return tf.data.Dataset.from_tensor_slices(
            (
                {"input_a": data["input_a"], "input_b": data["input_b"]},
                {"dense_2": data["dense_2"], "dense_3": data["dense_3"]},
            )
        ).batch(32)

    return fn


# --------------------------------------------------------------------------- defects


def test_batchnorm_statistics_survive_conversion(converter, tf, tmp_path):
    x, y = bn_data()
    model = _bn_model(tf)
    # MSE: Keras computes sigmoid cross-entropy from logits eagerly but from clipped
    # probabilities in graph mode, which would blur what this test looks at.
    model.compile(optimizer=tf.keras.optimizers.legacy.Adam(0.01), loss="mse", metrics=["mae"])
    model.fit(x, y, epochs=3, verbose=0)
    keras_loss, keras_mae = model.evaluate(x, y, verbose=0)
    est = converter(keras_model=model, model_dir=str(tmp_path))
    metrics = est.evaluate(_input_fn(tf, x, y))
    assert metrics["loss"] == pytest.approx(keras_loss, rel=1e-4, abs=1e-6)
    assert metrics["mae"] == pytest.approx(keras_mae, rel=1e-4, abs=1e-6)


def test_callers_model_stays_usable(converter, tf, tmp_path):
    x, y = bn_data()
    model = _bn_model(tf)
    model.fit(x, y, epochs=1, verbose=0)
    before = model.predict(x[:4], verbose=0)
    est = converter(keras_model=model, model_dir=str(tmp_path))
    est.train(_input_fn(tf, x, y, repeat=True), steps=3)
    est.evaluate(_input_fn(tf, x, y))
    list(est.predict(_input_fn(tf, x[:2], y[:2])))
    np.testing.assert_allclose(model.predict(x[:4], verbose=0), before, rtol=1e-6)
    np.testing.assert_allclose(model(x[:4], training=False).numpy(), before, rtol=1e-6)
    model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=1, verbose=0)


def test_keep_checkpoint_max_is_honoured(converter, tf, tmp_path):
    x, y = bn_data()
    config = tf.estimator.RunConfig(keep_checkpoint_max=2, save_checkpoints_steps=2)
    est = converter(keras_model=_bn_model(tf), model_dir=str(tmp_path), config=config)
    est.train(_input_fn(tf, x, y, repeat=True, batch=32), steps=10)
    kept = sorted(glob.glob(str(tmp_path / "model.ckpt-*.index")))
    assert [os.path.basename(k) for k in kept] == ["model.ckpt-10.index", "model.ckpt-8.index"]


def test_metric_names_not_mangled_when_loading_from_path(
    converter, tf, gen, example_models, tmp_path
):
    path = str(tmp_path / "two_io.h5")
    example_models.two_input_two_output_model().save(path)
    est = converter(keras_model_path=path, model_dir=str(tmp_path / "md"))
    metrics = est.evaluate(_two_io_input_fn(tf, gen))
    assert set(metrics) == {
        "loss",
        "global_step",
        "dense_2_categorical_accuracy",
        "dense_3_categorical_accuracy",
    }


def test_export_outputs_accepts_serving_default_and_keeps_every_head(converter, tf, tmp_path):
    inputs = {"a": tf.keras.Input((3,), name="a"), "b": tf.keras.Input((3,), name="b")}
    outputs = {
        "c": tf.keras.layers.Dense(1, name="c")(inputs["a"]),
        "d": tf.keras.layers.Dense(4, activation="softmax", name="d")(inputs["b"]),
    }
    model = tf.keras.Model(inputs, outputs)
    model.compile(loss="mse", optimizer=tf.keras.optimizers.legacy.SGD())
    est = converter(
        keras_model=model,
        model_dir=str(tmp_path / "md"),
        export_outputs={
            "serving_default": tf.estimator.export.PredictOutput,
            "c": tf.estimator.export.RegressionOutput,
            "d": tf.estimator.export.ClassificationOutput,
        },
    )
    x = np.ones((4, 3), np.float32)
    est.train(
        lambda: tf.data.Dataset.from_tensors(
            ({"a": x, "b": x}, {"c": x[:, :1], "d": np.ones((4, 4), np.float32)})
        ),
        steps=1,
    )

    def receiver():
        t = {k: tf.compat.v1.placeholder(tf.float32, [None, 3], name=k) for k in ("a", "b")}
        return tf.estimator.export.ServingInputReceiver(t, t)

    path = est.export_saved_model(str(tmp_path / "export"), receiver).decode()
    signatures = tf.saved_model.load(path).signatures
    assert set(signatures) == {"serving_default", "c", "d"}
    scores = signatures["d"](a=tf.constant(x), b=tf.constant(x))["scores"]
    assert scores.shape == (4, 4)


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda tf: tf.keras.optimizers.AdamW(),
        lambda tf: tf.keras.optimizers.Adam(weight_decay=0.01),
        lambda tf: tf.keras.optimizers.SGD(use_ema=True),
    ],
    ids=["AdamW", "Adam-weight_decay", "SGD-ema"],
)
def test_unfaithful_optimizers_are_refused_clearly(converter, tf, tmp_path, make_optimizer):
    model = _bn_model(tf, optimizer=make_optimizer(tf))
    with pytest.raises(ValueError, match="legacy optimizer"):
        converter(keras_model=model, model_dir=str(tmp_path))


def test_new_style_optimizer_without_extras_is_converted(tf, tmp_path):
    import k2e_core

    x, y = bn_data()
    model = _bn_model(tf, optimizer=tf.keras.optimizers.Adam(0.01, clipnorm=1.0))
    est = k2e_core.convert(keras_model=model, model_dir=str(tmp_path))
    est.train(_input_fn(tf, x, y, repeat=True, batch=32), steps=5)
    assert type(model.optimizer).__name__ == "Adam"
    assert not isinstance(model.optimizer, tf.keras.optimizers.legacy.Optimizer)


@pytest.mark.parametrize("fmt", [".keras", ".h5", "savedmodel"])
def test_keras_model_path_at_any_fsspec_url(converter, tf, tmp_path, fmt):
    import fsspec

    x, y = bn_data()
    model = _bn_model(tf)
    model.fit(x, y, epochs=1, verbose=0)
    local = str(tmp_path / ("m" + fmt if fmt != "savedmodel" else "m_savedmodel"))
    model.save(local) if fmt != "savedmodel" else model.save(local, save_format="tf")
    url = f"memory://k2e-tests/{tmp_path.name}/{os.path.basename(local)}"
    fsspec.filesystem("memory").put(local, url, recursive=os.path.isdir(local))
    est = converter(keras_model_path=url, model_dir=str(tmp_path / "md"))
    metrics = est.evaluate(_input_fn(tf, x, y))
    assert metrics["loss"] == pytest.approx(model.evaluate(x, y, verbose=0)[0], rel=1e-4)


def test_reused_model_dir_never_warm_starts_from_a_different_model(converter, tf, tmp_path):
    x, y = bn_data()
    first = _bn_model(tf)
    est = converter(keras_model=first, model_dir=str(tmp_path))
    est.train(_input_fn(tf, x, y, repeat=True, batch=32), steps=2)
    other = tf.keras.Sequential(
        [tf.keras.layers.Dense(3, input_shape=(4,), name="d"), tf.keras.layers.Dense(1, name="out")]
    )
    other.compile(optimizer=tf.keras.optimizers.legacy.SGD(), loss="mse")
    with pytest.raises(ValueError, match="different model"):
        converter(keras_model=other, model_dir=str(tmp_path))


def test_new_weights_of_same_model_replace_an_untrained_warm_start(tf, tmp_path):
    import k2e_core

    x, y = bn_data()
    model = _bn_model(tf)
    k2e_core.convert(keras_model=model, model_dir=str(tmp_path))
    model.fit(x, y, epochs=2, verbose=0)
    est = k2e_core.convert(keras_model=model, model_dir=str(tmp_path))
    metrics = est.evaluate(_input_fn(tf, x, y))
    assert metrics["loss"] == pytest.approx(model.evaluate(x, y, verbose=0)[0], rel=1e-4)


def test_partial_metric_names_map(converter, tf, gen, example_models, tmp_path):
    est = converter(
        keras_model=example_models.two_input_two_output_model(),
        model_dir=str(tmp_path),
        metric_names_map={"dense_2_categorical_accuracy": "acc_1"},
    )
    metrics = est.evaluate(_two_io_input_fn(tf, gen))
    assert {"acc_1", "dense_3_categorical_accuracy"} <= set(metrics)


def test_dict_output_keys_name_predictions(converter, tf, tmp_path):
    inp = tf.keras.Input((3,), name="x")
    model = tf.keras.Model(
        inp,
        {
            "price": tf.keras.layers.Dense(1, name="dense_price")(inp),
            "kind": tf.keras.layers.Dense(2, name="dense_kind")(inp),
        },
    )
    model.compile(loss="mse", optimizer=tf.keras.optimizers.legacy.SGD())
    est = converter(keras_model=model, model_dir=str(tmp_path))
    x = np.ones((2, 3), np.float32)
    prediction = next(est.predict(lambda: tf.data.Dataset.from_tensors({"x": x})))
    assert set(prediction) == {"price", "kind"}


# --------------------------------------------------------------------------- API doc contract


def test_documented_value_errors(tf, tmp_path):
    import k2e_core

    model = _bn_model(tf)
    with pytest.raises(ValueError, match="Either `keras_model` or `keras_model_path`"):
        k2e_core.convert()
    with pytest.raises(ValueError, match="not both"):
        k2e_core.convert(keras_model=model, keras_model_path="m.h5")
    uncompiled = tf.keras.Sequential([tf.keras.layers.Dense(1, input_shape=(2,))])
    with pytest.raises(ValueError, match="has not been compiled"):
        k2e_core.convert(keras_model=uncompiled)
    with pytest.raises(ValueError, match="Checkpoint format must be one of"):
        k2e_core.convert(keras_model=model, checkpoint_format="pickle")


def test_model_dir_argument_wins_over_config_and_saver_format_works(tf, tmp_path):
    import k2e_core

    x, y = bn_data()
    config = tf.estimator.RunConfig(model_dir=str(tmp_path / "from_config"))
    est = k2e_core.convert(
        keras_model=_bn_model(tf),
        model_dir=str(tmp_path / "arg"),
        config=config,
        checkpoint_format="saver",
    )
    est.train(_input_fn(tf, x, y, repeat=True, batch=32), steps=2)
    assert est.model_dir == str(tmp_path / "arg")
    assert "d/kernel" in est.get_variable_names()


def test_custom_objects_by_import_path(tf, tmp_path):
    import k2e_core

    module = tmp_path / "my_layers.py"
    module.write_text(
        "import tensorflow as tf\n"
        "class Scale(tf.keras.layers.Layer):\n"
        "    def call(self, x):\n"
        "        return x * 2.0\n"
    )
    from k2e_core.objects import import_object

    scale = import_object(f"{module}:Scale")
    inp = tf.keras.Input((4,), name="x")
    model = tf.keras.Model(inp, tf.keras.layers.Dense(1)(scale()(inp)))
    model.compile(loss="mse", optimizer=tf.keras.optimizers.legacy.SGD())
    path = str(tmp_path / "m.keras")
    model.save(path)
    est = k2e_core.convert(
        keras_model_path=path,
        model_dir=str(tmp_path / "md"),
        custom_objects={"Scale": f"{module}:Scale"},
    )
    x = np.ones((2, 4), np.float32)
    prediction = next(est.predict(lambda: tf.data.Dataset.from_tensors({"x": x})))
    np.testing.assert_allclose(
        list(prediction.values())[0], model.predict(x, verbose=0)[0], rtol=1e-5
    )


def test_bad_import_paths_say_what_is_wrong():
    from k2e_core.objects import import_object

    with pytest.raises(ValueError, match="package.module:Name"):
        import_object("no_colon_here")
    with pytest.raises(ValueError, match="cannot import"):
        import_object("surely_not_a_module_k2e:Thing")
    with pytest.raises(ValueError, match="has no attribute"):
        import_object("os.path:not_there")
