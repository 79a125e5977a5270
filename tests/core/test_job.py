"""Job steps end to end on generated data: run, step by step, resume, early stop, export."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest


def _versions(base):
    return sorted(int(n) for n in os.listdir(base) if n.isdigit()) if os.path.isdir(base) else []


@pytest.mark.slow
def test_checkpoints_are_saved_by_time_and_at_each_evaluation(iris_spec):
    """A fast model is not slowed by a save every N steps: a checkpoint is saved every 60 s
    (and at the start and end), and at each of the evaluations during training: five by
    default; save_checkpoints_steps asks for steps."""
    from k2e_core.steps import job

    def checkpoints(model_dir):
        return sorted(
            int(n.split("-")[1].split(".")[0])
            for n in os.listdir(model_dir)
            if n.startswith("model.ckpt-") and n.endswith(".index")
        )

    by_time = dict(iris_spec, train={"steps": 2500}, eval={"every_steps": "checkpoint"})
    result = job.train_step(by_time)
    assert checkpoints(iris_spec["model_dir"]) == [0, 2500]
    assert result["evaluations"] == 1
    defaults = {k: v for k, v in iris_spec.items() if k != "eval"}
    default = dict(defaults, train={"steps": 2500}, model_dir=iris_spec["model_dir"] + "-eval")
    result = job.train_step(default)
    assert checkpoints(default["model_dir"]) == [500, 1000, 1500, 2000, 2500]  # keeps 5
    assert result["evaluations"] == 5
    assert result["metrics"]["global_step"] == 2500
    by_steps = dict(
        by_time,
        model_dir=iris_spec["model_dir"] + "-steps",
        run_config={"save_checkpoints_steps": 1000},
    )
    job.train_step(by_steps)
    assert checkpoints(by_steps["model_dir"]) == [0, 1000, 2000, 2500]


def test_run_trains_evaluates_and_publishes_a_verified_version(iris_spec, tf):
    from k2e_core.steps import job

    result = job.run(iris_spec)
    base = iris_spec["export"]["base"]
    assert result["version"] == 1 and _versions(base) == [1]
    assert result["export_path"] == os.path.join(base, "1")
    assert result["global_step"] == 60
    assert {"loss", "accuracy"} <= set(result["metrics"])
    assert os.path.isfile(os.path.join(result["export_path"], "saved_model.pb"))
    with open(result["manifest"]) as f:
        manifest = json.load(f)
    assert manifest["version"] == 1 and manifest["metrics"] == result["metrics"]
    assert manifest["source"]["checkpoint"] == "model.ckpt-60"
    json.dumps(result)  # the result crosses process boundaries as JSON

    served = tf.saved_model.load(result["export_path"]).signatures["serving_default"]
    out = served(dense_input=tf.constant([[5.0, 3.4, 1.5, 0.2]]))
    assert list(out.values())[0].shape == (1, 3)


def test_rerun_resumes_and_publishes_no_second_version_of_the_same_run(iris_spec):
    from k2e_core.steps import job

    first = job.run(iris_spec)
    again = job.run(iris_spec)  # a retried task: same checkpoint, same run
    assert again["train"]["steps_trained"] == 0 and again["global_step"] == 60
    assert (again["version"], again["reused"]) == (1, True)
    assert again["run_id"] == first["run_id"]
    newer = job.run(iris_spec, {"run_id": "nightly-2026-11-21"})
    assert (newer["version"], newer["reused"]) == (2, False)
    assert _versions(iris_spec["export"]["base"]) == [1, 2]


def test_steps_one_process_each_like_an_orchestrator(iris_spec):
    from k2e_core.steps import job

    converted = job.convert_step(iris_spec)
    assert converted["global_step"] == 0
    assert converted["inputs"] == {"dense_input": [4]}
    first = job.train_step(iris_spec, ["train.steps=30"])
    assert (first["global_step"], first["steps_trained"]) == (30, 30)
    second = job.train_step(iris_spec)  # resumes from step 30
    assert (second["global_step"], second["steps_trained"]) == (60, 30)
    evaluated = job.evaluate_step(iris_spec)
    assert evaluated["global_step"] == 60 and "accuracy" in evaluated["metrics"]
    exported = job.export_step(iris_spec)
    assert exported["version"] == 1 and exported["verified_rows"] == 8
    assert exported["signatures"] == ["serving_default"]


def test_training_learns_what_keras_fit_learns(iris_spec, example_models, gen, tf):
    from k2e_core.steps import job

    result = job.run(iris_spec, {"train.steps": 400})
    x, y = gen.iris(30, seed=2)
    model = example_models.iris_model()
    model.fit(x, y, epochs=54, batch_size=16, verbose=0)  # 120 rows / 16 -> 8 steps, ~400 steps
    keras_loss, keras_accuracy = model.evaluate(x, y, verbose=0)
    assert result["metrics"]["accuracy"] >= keras_accuracy - 0.1
    assert result["metrics"]["loss"] <= keras_loss * 1.3
    assert result["metrics"]["accuracy"] > 0.6  # three classes: well above chance


def test_early_stopping_stops_before_train_steps(iris_spec):
    from k2e_core.steps import job

    spec = dict(
        iris_spec,
        train={
            "steps": 2000,
            # loss keeps falling, so "no increase" triggers as soon as patience runs out
            "early_stopping": {
                "metric": "loss",
                "mode": "max",
                "patience_steps": 20,
                "check_every_steps": 10,
            },
        },
        run_config={"save_checkpoints_steps": 10, "log_every_secs": 1},
    )
    result = job.train_step(spec)
    assert result["stopped_early"] is True
    assert result["global_step"] < 200


def test_tf_example_serving_signature(iris_spec, tf):
    from k2e_core.steps import job

    spec = dict(iris_spec, export=dict(iris_spec["export"], serving_input="tf_example"))
    result = job.run(spec)
    served = tf.saved_model.load(result["export_path"]).signatures["serving_default"]
    example = tf.train.Example(
        features=tf.train.Features(
            feature={
                "dense_input": tf.train.Feature(
                    float_list=tf.train.FloatList(value=[5.0, 3.4, 1.5, 0.2])
                )
            }
        )
    )
    out = served(examples=tf.constant([example.SerializeToString()]))
    assert list(out.values())[0].shape == (1, 3)


def test_export_that_disagrees_with_keras_is_not_published(iris_spec, monkeypatch):
    from k2e_core.errors import ExportMismatch
    from k2e_core.estimator import export, keras_copies
    from k2e_core.steps import job

    job.train_step(iris_spec)
    real = keras_copies.keras_model_at

    def drifted(*args, **kwargs):
        model = real(*args, **kwargs)
        model.set_weights([w + 0.5 for w in model.get_weights()])
        return model

    monkeypatch.setattr(export, "keras_model_at", drifted)
    with pytest.raises(ExportMismatch, match="differs from the Keras model"):
        job.export_step(iris_spec)
    assert _versions(iris_spec["export"]["base"]) == []
    assert (
        not [n for n in os.listdir(iris_spec["export"]["base"]) if not n.startswith(".")]
        if os.path.isdir(iris_spec["export"]["base"])
        else True
    )


def test_multi_io_npz_job_with_renamed_metrics_and_heads(example_data, tmp_path, tf):
    from k2e_core.steps import job
    from tests.conftest import EXAMPLES

    spec = {
        "model": {
            "factory": os.path.join(EXAMPLES, "models.py") + ":two_input_two_output_model",
            "metric_names_map": {
                "dense_2_categorical_accuracy": "acc_1",
                "dense_3_categorical_accuracy": "acc_2",
            },
            "export_outputs": {
                "serving_default": {"kind": "predict"},
                "dense_2": {"kind": "classification"},
                "dense_3": {"kind": "predict", "output": "dense_3"},
            },
        },
        "model_dir": str(tmp_path / "model"),
        "data": {
            "train": {"files": str(example_data / "two_io_train.npz")},
            "eval": {"files": str(example_data / "two_io_test.npz")},
        },
        "train": {"steps": 40},
        "export": {"base": str(tmp_path / "export")},
    }
    result = job.run(spec)
    assert {"acc_1", "acc_2", "loss"} <= set(result["metrics"])
    assert result["signatures"] == ["dense_2", "dense_3", "serving_default"]
    scores = tf.saved_model.load(result["export_path"]).signatures["dense_2"](
        input_a=tf.zeros([2, 16]), input_b=tf.zeros([2, 16])
    )["scores"]
    np.testing.assert_allclose(scores.numpy().sum(1), [1.0, 1.0], rtol=1e-5)


def test_bag_of_words_tfrecord_job(example_data, tmp_path):
    from k2e_core.steps import job
    from tests.conftest import EXAMPLES

    spec = {
        "model": {"factory": os.path.join(EXAMPLES, "models.py") + ":bag_of_words_model"},
        "model_dir": str(tmp_path / "model"),
        "data": {
            "train": {"files": str(example_data / "bow_train.tfrecord")},
            "eval": {"files": str(example_data / "bow_test.tfrecord")},
        },
        "train": {"steps": 100},
        "export": {"base": str(tmp_path / "export")},
    }
    result = job.run(spec)
    assert result["metrics"]["accuracy"] > 0.8


def test_evaluate_reports_a_confusion_matrix_and_can_leave_model_dir_untouched(iris_spec):
    from k2e_core.steps import job

    job.train_step(iris_spec)
    before = sorted(os.listdir(iris_spec["model_dir"]))
    result = job.evaluate_step(iris_spec, read_only=True)
    assert sorted(os.listdir(iris_spec["model_dir"])) == before  # no eval/ summaries written
    assert result["checkpoint"] == os.path.join(iris_spec["model_dir"], "model.ckpt-60")
    matrix = np.array(result["confusion_matrix"]["matrix"])
    assert result["confusion_matrix"]["categories"] == ["0", "1", "2"]
    assert matrix.sum() == 30  # every row of iris_test.csv
    assert np.trace(matrix) / matrix.sum() == pytest.approx(result["metrics"]["accuracy"])
    assert "eval" in os.listdir(job.evaluate_step(iris_spec)["checkpoint"].rsplit("/", 1)[0])
