"""Loading a saved model runs no code from the file unless the spec says it is trusted:
a Lambda layer built from a `lambda` is stored as bytecode that Keras runs on loading."""

from __future__ import annotations

import json
import os

import pytest

from k2e_core import cli


@pytest.fixture(scope="module")
def lambda_models(tmp_path_factory, tf):
    """One model in each format, with a Lambda whose code leaves a file behind when it runs."""
    root = tmp_path_factory.mktemp("lambda-models")
    marker = str(root / "code-ran")
    model = tf.keras.Sequential(
        [
            tf.keras.Input((4,), name="measurements"),
            tf.keras.layers.Lambda(lambda x, path=marker: (open(path, "w").close(), x * 2)[1]),
            tf.keras.layers.Dense(3, name="dense"),
        ]
    )
    model.compile(optimizer=tf.keras.optimizers.legacy.Adam(), loss="mse")
    paths = {
        fmt: str(root / name)
        for fmt, name in (
            ("h5", "model.h5"),
            ("keras", "model.keras"),
            ("savedmodel", "savedmodel"),
        )
    }
    for path in paths.values():
        model.save(path)
    return paths, marker


def _spec(tmp_path, model_path, example_data, **model):
    return {
        "model": {"path": model_path, **model},
        "model_dir": str(tmp_path / "model"),
        "data": {
            "train": {"files": str(example_data / "iris_train.csv")},
            "features": {
                "measurements": ["sepal_length", "sepal_width", "petal_length", "petal_width"]
            },
            "labels": {"dense": ["sepal_length", "sepal_width", "petal_length"]},
        },
        "train": {"steps": 5},
        "export": {"base": str(tmp_path / "export")},
    }


@pytest.mark.parametrize("fmt", ["h5", "keras", "savedmodel"])
def test_a_lambda_layer_in_a_model_file_is_refused_before_its_code_runs(
    fmt, lambda_models, tmp_path, example_data, capsys
):
    paths, marker = lambda_models
    if os.path.exists(marker):
        os.remove(marker)
    spec_path = tmp_path / "job.json"
    spec_path.write_text(json.dumps(_spec(tmp_path, paths[fmt], example_data)))
    code = cli.main(["validate", str(spec_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(
        f"k2e: error: model.path: {paths[fmt]} holds Lambda layer(s) ['lambda']"
    )
    assert "model.allow_unsafe_deserialization: true" in err[0]
    assert not os.path.exists(marker)

    spec_path.write_text(
        json.dumps(_spec(tmp_path, paths[fmt], example_data, allow_unsafe_deserialization=True))
    )
    assert cli.main(["validate", str(spec_path)]) == 0, capsys.readouterr().err
    assert os.path.exists(marker)  # the file's code did run: that is the risk the opt-in takes


def test_the_drop_in_refuses_it_too_and_takes_the_same_opt_in(lambda_models, tmp_path):
    from k2e_core import convert
    from k2e_core.estimator.model_files import UnsafeModelFile

    paths, _ = lambda_models
    with pytest.raises(UnsafeModelFile, match="whose Python bytecode would run"):
        convert(keras_model_path=paths["h5"], model_dir=str(tmp_path / "a"))
    assert convert(
        keras_model_path=paths["h5"],
        model_dir=str(tmp_path / "b"),
        allow_unsafe_deserialization=True,
    ).model_dir == str(tmp_path / "b")
