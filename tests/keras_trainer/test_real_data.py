"""Data as users have it, on the Keras trainer: a public dataset that ships in scikit-learn,
written as pandas writes Parquet (pyarrow, row groups) and as a TFRecord writer writes
tf.Examples, through the shared input layer. Numbers are compared with what Keras 3 gives
on the same rows."""

from __future__ import annotations

import numpy as np
import pytest

from tests import real_data


def _restored(spec: dict, tf):
    """The factory's model with the job's latest checkpoint, for Keras' own predict/evaluate."""
    model = real_data.cancer_model()
    tf.train.Checkpoint(model=model).restore(
        tf.train.latest_checkpoint(spec["model_dir"])
    ).expect_partial()
    return model


def _malignant_recall(model, x, y) -> float:
    return float(((model.predict(x, verbose=0)[:, 0] < 0.5) & (y == 0)).sum() / (y == 0).sum())


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["parquet", "tfrecord"])
def test_sample_weighted_public_data_trains_and_evaluates_as_keras_fit_does(tmp_path, tf, fmt):
    """breast_cancer with weight 0 on every malignant (class 0) row and the label first: like
    Keras fit(sample_weight=...), the model stops predicting class 0, and the job's evaluation
    is Keras evaluate's on the same rows with the same weights."""
    from k2e_core.steps import job

    frame = real_data.sklearn_frame("breast_cancer")
    frame.insert(0, "weight", (frame["target"] == 1).astype(float))
    path = tmp_path / f"cancer.{fmt}"
    if fmt == "parquet":
        frame.to_parquet(path, index=False, row_group_size=200)
    else:
        real_data.write_frame_tfrecord(frame, str(path))
    features = [c for c in frame.columns if c not in ("target", "weight")]
    x, y = frame[features].to_numpy(np.float32), frame["target"].to_numpy(np.float32)
    weights = frame["weight"].to_numpy(np.float32)
    spec = {
        "trainer": "keras",
        "model": {"factory": real_data.factory("cancer_model")},
        "model_dir": str(tmp_path / "model"),
        "data": {
            "train": {"files": str(path)},
            "features": {"x": features},
            "labels": "target",
            "sample_weight": "weight",
            "batch_size": 1024,
        },
        "train": {"steps": 300},
        "eval": {"every_steps": "end"},
        "run_config": {"tf_random_seed": 1},
        "export": {"base": str(tmp_path / "export")},
    }
    done = job.run(spec)
    assert done["blessed"] and done["version"] == 1 and done["global_step"] == 300

    trained = _restored(spec, tf)
    loss, _ = trained.evaluate(x, y, sample_weight=weights, batch_size=1024, verbose=0)
    assert done["metrics"]["loss"] == pytest.approx(loss, rel=1e-4)

    fit = real_data.cancer_model()
    rows = tf.data.Dataset.from_tensor_slices((x, y, weights)).shuffle(1024, seed=1)
    fit.fit(rows.repeat().batch(1024), steps_per_epoch=300, epochs=1, verbose=0)
    recall, keras_recall = _malignant_recall(trained, x, y), _malignant_recall(fit, x, y)
    assert recall < 0.5 and abs(recall - keras_recall) < 0.1, (recall, keras_recall)
