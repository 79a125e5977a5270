"""What TensorBoard shows after a job: train and eval curves under the same names, speed,
evaluations during training, the gate's baseline in a run of its own. Event files are read
with TensorBoard's own reader, as TensorBoard reads them."""

from __future__ import annotations

import os

import pytest

from tests.conftest import example_spec


def scalars(run_dir):
    from tensorboard.backend.event_processing import event_accumulator

    accumulator = event_accumulator.EventAccumulator(
        run_dir, size_guidance={event_accumulator.SCALARS: 0}
    )
    accumulator.Reload()
    return {
        tag: [(e.step, e.value) for e in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }


def iris_example(example_data, tmp_path) -> dict:
    """examples/iris.yaml as it ships (1000 steps, default cadences), writing into tmp_path."""
    spec = example_spec("iris", "iris_model", example_data, "iris")
    spec["model_dir"] = str(tmp_path / "model")
    spec["export"]["base"] = str(tmp_path / "export")
    return spec


def test_the_iris_example_shows_train_and_eval_curves_that_overlay(example_data, tmp_path, caplog):
    """Before: one train point tagged `loss_1` (so train and eval loss could not be
    overlaid), no train accuracy, no steps/s, and one evaluation at the end."""
    from k2e_core.steps import job

    spec = iris_example(example_data, tmp_path)
    with caplog.at_level("INFO", logger="k2e"):
        result = job.run(spec)
    train = scalars(spec["model_dir"])
    evaluation = scalars(os.path.join(spec["model_dir"], "eval"))

    assert "loss_1" not in train
    for tag in ("loss", "accuracy"):
        assert len(train[tag]) >= 10, (tag, train[tag])
        assert len(evaluation[tag]) >= 3, (tag, evaluation[tag])
    assert [s for s, _ in evaluation["loss"]] == [200, 400, 600, 800, 1000]
    assert train["loss"][-1][0] == 1000  # the last steps are not left out
    for tag in ("global_step/sec", "examples/sec"):
        assert len(train[tag]) >= 9 and all(v > 0 for _, v in train[tag])
    examples_per_step = [
        e / s for (_, e), (_, s) in zip(train["examples/sec"], train["global_step/sec"])
    ]
    assert all(abs(x - 32) < 1e-3 for x in examples_per_step)  # batch_size 32

    # each point is the mean over its window (reset after each point), so it follows training
    accuracy = [v for _, v in train["accuracy"]]
    assert all(0 <= v <= 1 for v in accuracy)
    assert accuracy[-1] > accuracy[0] + 0.2
    assert train["loss"][-1][1] < train["loss"][0][1] / 2
    # the run's metrics are the last evaluation's, logged as each evaluation happened
    assert result["metrics"]["loss"] == pytest.approx(evaluation["loss"][-1][1], rel=1e-5)
    assert result["train"]["evaluations"] == 5
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("evaluated step")]
    assert [m.split(" in ")[0] for m in logged] == [
        f"evaluated step {s}" for s in (200, 400, 600, 800, 1000)
    ]


def test_with_a_point_every_step_a_train_point_is_one_batch(iris_spec):
    """The metrics are reset after each point: with save_summary_steps 1 the accuracy at
    each step is that batch's (a multiple of 1/16 for 16 rows), not a running mean."""
    from k2e_core.steps import job

    spec = dict(
        iris_spec,
        train={"steps": 3},
        run_config={**iris_spec["run_config"], "save_summary_steps": 1},
        eval={"every_steps": "end"},
    )
    job.train_step(spec)
    train = scalars(spec["model_dir"])
    assert [s for s, _ in train["accuracy"]] == [1, 2, 3]
    assert [s for s, _ in train["loss"]] == [1, 2, 3]
    for _, value in train["accuracy"]:
        assert abs(value * 16 - round(value * 16)) < 1e-4


def test_a_process_that_runs_job_after_job_keeps_no_event_file_open(iris_spec, tmp_path):
    """An Airflow worker running jobs in its own process: each job's event writers (train,
    eval, the checkpoint saver's) are closed when it ends, not kept until the process exits."""
    import threading

    import psutil

    from k2e_core.steps import job

    def writer_threads():
        return sum(t.name == "EventLoggerThread" for t in threading.enumerate())

    before = writer_threads()
    for n in range(2):
        spec = dict(
            iris_spec,
            model_dir=str(tmp_path / f"model{n}"),
            export={"base": str(tmp_path / f"export{n}")},
            eval={"every_steps": 30},
        )
        assert job.run(spec)["version"] == 1
        assert scalars(os.path.join(spec["model_dir"], "eval"))["accuracy"]
    assert writer_threads() <= before
    held = [f.path for f in psutil.Process().open_files() if f.path.startswith(str(tmp_path))]
    assert held == []


def test_evaluation_cadence_is_chosen_in_the_spec(iris_spec):
    from k2e_core.steps import job

    def evaluated_steps(model_dir):
        return [s for s, _ in scalars(os.path.join(model_dir, "eval"))["loss"]]

    every = dict(iris_spec, train={"steps": 60}, eval={"every_steps": 25})
    result = job.train_step(every)
    assert evaluated_steps(every["model_dir"]) == [25, 50, 60]
    assert result["evaluations"] == 3
    at_end = dict(iris_spec, model_dir=iris_spec["model_dir"] + "-end", eval={"every_steps": "end"})
    result = job.train_step(at_end)
    assert not os.path.isdir(os.path.join(at_end["model_dir"], "eval"))  # train alone
    assert "evaluations" not in result
    by_checkpoint = dict(
        {k: v for k, v in iris_spec.items() if k != "eval"},  # the default follows checkpoints
        model_dir=iris_spec["model_dir"] + "-ckpt",
        run_config={**iris_spec["run_config"], "save_checkpoints_steps": 20},
    )
    job.train_step(by_checkpoint)
    assert evaluated_steps(by_checkpoint["model_dir"]) == [20, 40, 60]


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"eval": {"every_steps": 0}}, "eval.every_steps: must be a positive number of steps"),
        (
            {"eval": {"every_steps": 50}, "run_config": {"save_checkpoints_steps": 20}},
            "eval.every_steps (50) and run_config.save_checkpoints_steps (20) differ",
        ),
    ],
)
def test_a_cadence_that_cannot_work_is_refused_before_training(iris_spec, fields, message):
    from k2e_core.errors import SpecError
    from k2e_core.spec import load_spec

    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_spec({**iris_spec, **fields})


def test_the_gate_baseline_is_its_own_run_and_logs_as_the_baseline(
    retraining_spec, example_data, tmp_path, caplog
):
    """The baseline's evaluation was written to a scratch model_dir and logged as
    `evaluated step 0`."""
    from k2e_core.spec import apply_overrides
    from k2e_core.steps import job
    from tests.conftest import retraining_day

    job.run(retraining_spec)
    day2 = apply_overrides(retraining_spec, retraining_day(2, example_data, tmp_path))
    with caplog.at_level("INFO", logger="k2e"):
        result = job.run(day2)
    baseline = scalars(os.path.join(day2["model_dir"], "eval_baseline"))
    measured = result["gate"]["baseline"]["metrics"]
    assert set(baseline) == {"accuracy", "loss"}
    for tag, points in baseline.items():
        assert points == [(result["global_step"], pytest.approx(measured[tag], rel=1e-5))]
    candidate = scalars(os.path.join(day2["model_dir"], "eval"))
    assert candidate["loss"][-1][0] == result["global_step"]  # overlaid at the same step
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        m.startswith("evaluated baseline version 1 on this run's eval data") for m in messages
    )
    assert not any(m.startswith("evaluated step 0") for m in messages)
