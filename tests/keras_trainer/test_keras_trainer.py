"""What the Estimator gave, on Keras 3: step checkpoints that resume after SIGKILL and SIGTERM
with the optimizer's state, evaluation during training with TensorBoard curves under the
same tags, early stopping, TF Serving's classify signature, and clear refusals."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest

from tests.conftest import EXAMPLES, REPO
from tests.keras_trainer.conftest import (
    checkpoint_steps,
    event_tags,
    iris_spec,
    k2e,
    signature_defs,
    start,
    stop,
    wait_for_checkpoint,
)


def test_the_iris_example_publishes_a_classify_signature(tmp_path, example_data):
    """The README's command: `.venv-keras/bin/k2e run examples/iris.yaml --set trainer=keras`
    publishes a version whose `classification` signature TF Serving's Classify API takes."""
    import subprocess

    out = tmp_path / "out"
    proc = subprocess.run(
        [
            os.path.join(REPO, ".venv-keras", "bin", "k2e"),
            "run",
            os.path.join(EXAMPLES, "iris.yaml"),
            "--set",
            "trainer=keras",
            "--set",
            f"model_dir={out / 'model'}",
            "--set",
            f"export.base={out / 'export'}",
            "--set",
            f"data.train.files={example_data}/iris_train.csv",
            "--set",
            f"data.eval.files={example_data}/iris_test.csv",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr

    done = json.loads(proc.stdout.strip().splitlines()[-1])
    assert done["blessed"] and done["version"] == 1
    assert done["metrics"]["accuracy"] > 0.7  # 30 eval rows; the parity tests compare
    sigs = signature_defs(done["export_path"])
    assert sigs["classification"] == (
        "tensorflow/serving/classify",
        ["inputs"],
        ["scores"],
    )
    assert sigs["serving_default"][0] == "tensorflow/serving/predict"
    assert sigs["serving_default"][1] == ["examples"]
    assert "Traceback" not in proc.stderr and "absl::InitializeLog" not in proc.stderr
    assert "oneDNN" not in proc.stderr


@pytest.mark.slow
def test_sigkill_then_rerun_resumes_at_the_last_checkpoint_with_the_optimizer_state(
    example_data, tmp_path
):
    spec = iris_spec(
        example_data,
        tmp_path,
        train={"steps": 20000},
        run_config={"tf_random_seed": 1, "save_checkpoints_steps": 200, "keep_checkpoint_max": 2},
    )
    proc = start("train", spec, tmp_path)
    reached = wait_for_checkpoint(spec["model_dir"], proc, above=200)
    stop(proc, signal.SIGKILL)
    reached = max(checkpoint_steps(spec["model_dir"]))
    assert 200 < reached < 20000 and reached % 200 == 0
    assert len(checkpoint_steps(spec["model_dir"])) <= 2  # keep_checkpoint_max

    from k2e_core.keras_trainer import model as keras_model
    from k2e_core.keras_trainer import training
    from k2e_core.spec import load_spec
    from k2e_core.tf_runtime import tf

    loaded = load_spec(spec)
    model = keras_model.load(loaded, {}, str(tmp_path))
    checkpoints = training.Checkpoints(model, spec["model_dir"], 2)
    assert checkpoints.restore() == reached
    reader = tf.train.load_checkpoint(checkpoints.latest)
    moments = [n for n in reader.get_variable_to_shape_map() if n.startswith("optimizer/_var")]
    assert moments, "the checkpoint holds Adam's moments"
    restored = {v.path: v.numpy() for v in model.optimizer.variables}
    assert any(np.abs(value).sum() > 0 for name, value in restored.items() if "momentum" in name)

    code, done, err = k2e(
        "train",
        {**spec, "train": {"steps": reached + 100}},
        tmp_path,
        "--set",
        "eval.every_steps=end",
    )
    assert code == 0, err
    assert done["global_step"] == reached + 100 and done["steps_trained"] == 100
    assert f"training from step {reached} to {reached + 100}" in err


@pytest.mark.slow
def test_checkpoints_every_n_seconds_keep_the_newest_ones(example_data, tmp_path):
    spec = iris_spec(
        example_data,
        tmp_path,
        train={"steps": 6000},
        run_config={"tf_random_seed": 1, "save_checkpoints_secs": 1, "keep_checkpoint_max": 3},
    )
    code, done, err = k2e("train", spec, tmp_path)
    assert code == 0, err
    steps = checkpoint_steps(spec["model_dir"])
    assert len(steps) == 3 and steps[-1] == 6000  # the last step is always saved
    assert steps[0] > 0 and all(s % 100 == 0 for s in steps)  # at the ends of spans
    with open(os.path.join(spec["model_dir"], "checkpoint")) as f:
        assert "model.ckpt-6000" in f.readline()


@pytest.mark.slow
def test_sigterm_saves_the_step_it_reached_and_a_rerun_goes_on_from_it(example_data, tmp_path):
    spec = iris_spec(
        example_data,
        tmp_path,
        train={"steps": 50000},
        run_config={"tf_random_seed": 1, "save_checkpoints_secs": 600},
    )
    proc = start("train", spec, tmp_path)
    wait_for_checkpoint(spec["model_dir"], proc, above=-1)  # step 0: the model is loaded
    import time

    time.sleep(2)
    code, err = stop(proc, signal.SIGTERM)
    assert code == 1, err
    steps = checkpoint_steps(spec["model_dir"])
    assert steps[-1] > 0
    assert f"training stopped on request at step {steps[-1]}" in err
    assert err.strip().splitlines()[-1].startswith("k2e:")

    code, done, err = k2e("train", {**spec, "train": {"steps": steps[-1] + 40}}, tmp_path)
    assert code == 0, err
    assert done["steps_trained"] == 40


def test_curves_evaluations_and_early_stopping_as_the_estimator_trainer_writes_them(
    example_data, tmp_path
):
    spec = iris_spec(
        example_data,
        tmp_path,
        train={
            "steps": 5000,
            "early_stopping": {
                "metric": "accuracy",
                "mode": "max",
                "patience_steps": 100,
                "check_every_steps": 50,
            },
        },
        eval={"every_steps": 50},
        run_config={"tf_random_seed": 1, "save_summary_steps": 25},
    )
    code, done, err = k2e("train", spec, tmp_path)
    assert code == 0, err
    assert done["stopped_early"] is True and done["global_step"] < 5000
    assert done["evaluations"] == done["global_step"] // 50
    assert done["metrics"]["global_step"] == done["global_step"]
    assert "early stopping at step" in err
    assert event_tags(spec["model_dir"]) == {"loss", "accuracy", "global_step/sec", "examples/sec"}
    assert event_tags(os.path.join(spec["model_dir"], "eval")) == {"loss", "accuracy"}


@pytest.mark.parametrize(
    "change, field",
    [
        ({"cluster": {"workers": 1, "ps": 1}}, "cluster"),
        ({"model": {"premade": {"kind": "linear"}}}, "model.premade"),
        ({"baseline": {"kind": "linear"}}, "baseline"),
    ],
)
def test_what_only_the_estimator_trainer_does_is_refused_in_one_line(
    example_data, tmp_path, change, field
):
    spec = iris_spec(example_data, tmp_path)
    spec.update(change)
    code, _, err = k2e("validate", spec, tmp_path)
    assert code == 2
    assert err.count("\n") == 1 and f"{field}: the keras trainer" in err
    assert "trainer: estimator" in err
    assert not os.path.exists(spec["model_dir"])


def test_the_estimator_trainer_here_names_the_interpreter_that_has_it(example_data, tmp_path):
    spec = iris_spec(example_data, tmp_path, trainer="estimator")
    code, _, err = k2e("run", spec, tmp_path)
    assert code == 2 and err.count("\n") == 1
    assert "the estimator trainer needs tensorflow 2.15" in err and ".venv/bin/k2e" in err
    assert not os.path.exists(spec["model_dir"])


@pytest.mark.slow
def test_a_model_dir_on_s3_gets_each_checkpoint_and_a_rerun_resumes_from_the_store(
    example_data, tmp_path, s3
):
    """model_dir and export base on an S3 server: checkpoints go up in the background as
    they are saved, the version is published there, and a rerun in a fresh process fetches
    the last checkpoint and goes on from its step."""
    import s3fs

    from tests.conftest import on_s3

    spec = on_s3(
        iris_spec(example_data, tmp_path),
        s3,
        train={"steps": 400},
        run_config={"tf_random_seed": 1, "save_checkpoints_steps": 100},
    )
    code, done, err = k2e("run", spec, tmp_path)
    assert code == 0, err
    assert done["model_dir"] == spec["model_dir"] and done["version"] == 1
    assert done["train"]["checkpoint_uploads"]["uploaded"] >= 4
    fs = s3fs.S3FileSystem(**s3["s3"])
    names = {path.rsplit("/", 1)[-1] for path in fs.ls(spec["model_dir"].removeprefix("s3://"))}
    assert {"checkpoint", "model.ckpt-400.index"} <= names
    assert fs.exists(spec["export"]["base"].removeprefix("s3://") + "/1/saved_model.pb")

    code, again, err = k2e("train", {**spec, "train": {"steps": 450}}, tmp_path)
    assert code == 0, err
    assert again["steps_trained"] == 50 and again["resume_download_bytes"] > 0


@pytest.mark.slow
def test_a_warm_start_from_a_checkpoint_of_this_trainer_takes_its_optimizer_state(
    example_data, tmp_path
):
    """Adam's moments come along with the weights, the step count back at 0, as the
    Estimator trainer seeds its slots; the record names where they came from."""
    from k2e_core.tf_runtime import tf

    first = iris_spec(example_data, tmp_path / "first", train={"steps": 200})
    code, _, err = k2e("train", first, tmp_path)
    assert code == 0, err
    second = iris_spec(example_data, tmp_path / "second", warm_start=first["model_dir"])
    code, converted, err = k2e("convert", second, tmp_path)
    assert code == 0, err
    assert converted["global_step"] == 0
    assert converted["warm_start"]["optimizer_state"].endswith("model.ckpt-200")

    source = tf.train.load_checkpoint(os.path.join(first["model_dir"], "model.ckpt-200"))
    seeded = tf.train.load_checkpoint(os.path.join(second["model_dir"], "model.ckpt-0"))
    step = "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"
    assert source.get_tensor(step) == 200 and seeded.get_tensor(step) == 0
    moments = [
        name
        for name in source.get_variable_to_shape_map()
        if name.startswith("optimizer/_variables/") and name != step
    ]
    assert len(moments) >= 8  # two per kernel and bias of both layers
    for name in moments:
        np.testing.assert_array_equal(seeded.get_tensor(name), source.get_tensor(name))
    assert any(np.abs(source.get_tensor(name)).sum() > 0 for name in moments)


def test_the_steps_one_by_one_as_the_retraining_dag_and_pipeline_run_them(example_data, tmp_path):
    """validate, train, evaluate, export (with evaluate's metrics), each opening the job
    afresh as each task does: the version records the evaluated step and metrics, and a
    second train goes on from the step the first reached."""
    from k2e_core.steps import job

    spec = iris_spec(example_data, tmp_path, train={"steps": 40})
    job.validate(spec)
    assert not os.path.exists(spec["model_dir"])  # validate writes nothing
    assert job.train_step(spec)["global_step"] == 40
    evaluated = job.evaluate_step(spec)
    assert evaluated["global_step"] == 40 and 0 < evaluated["metrics"]["loss"] < 5
    exported = job.export_step(spec, metrics=evaluated["metrics"])
    assert exported["version"] == 1
    with open(os.path.join(exported["export_path"], "k2e-record.json")) as f:
        record = json.load(f)
    assert record["metrics"] == evaluated["metrics"]
    assert job.train_step({**spec, "train": {"steps": 70}})["global_step"] == 70
    assert checkpoint_steps(spec["model_dir"])[-1] == 70
