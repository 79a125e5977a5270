"""Distributed training on this machine: `k2e run --cluster`, one process per task with the
TF_CONFIG the training operator would give it, real TensorFlow servers on 127.0.0.1."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import time

import psutil
import pytest
import yaml

K2E = os.path.join(os.path.dirname(sys.executable), "k2e")


def _write(tmp_path, spec):
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def _k2e(*args, timeout=300):
    proc = subprocess.run([K2E, *args], capture_output=True, text=True, timeout=timeout)
    result = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else None
    return proc, result


def _versions(base):
    return (
        sorted(name for name in os.listdir(base) if name.isdigit()) if os.path.isdir(base) else []
    )


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["between_graph", "parameter_server"])
def test_chief_worker_and_ps_train_together_and_only_the_chief_publishes(
    iris_spec, tmp_path, strategy
):
    iris_spec["train"]["steps"] = 1500
    iris_spec["cluster"] = {"strategy": strategy}
    proc, result = _k2e("run", _write(tmp_path, iris_spec), "--cluster", "workers=1,ps=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert result["task"] == "chief" and result["version"] == 1 and result["blessed"]
    assert result["global_step"] >= 1500
    worker = result["cluster"]["tasks"]["worker0"]
    assert worker["task"] == "worker0" and worker["global_step"] >= 1500
    assert worker["steps_trained"] > 0  # the worker trained; it did not only wait
    assert result["cluster"]["layout"] == {"ps": 1, "chief": 1, "worker": 1}
    assert _versions(iris_spec["export"]["base"]) == ["1"]
    # The ps shards the checkpoint: variables live on the ps, the chief saved them.
    assert glob.glob(os.path.join(iris_spec["model_dir"], "model.ckpt-*.data-00000-of-00002"))
    for name in ("[chief]", "[worker0]", "[ps0]"):
        assert name in proc.stderr
    assert "[chief]" in next(
        line for line in proc.stderr.splitlines() if "published version 1" in line
    )
    for noise in ("WARNING:tensorflow", "Instructions for updating", "Traceback"):
        assert noise not in proc.stderr


@pytest.mark.slow
def test_evaluator_follows_checkpoints_and_early_stopping_ends_the_cluster(iris_spec, tmp_path):
    iris_spec["train"] = {
        "steps": 200000,
        # accuracy on 30 eval rows stops improving within a few hundred steps; the loss
        # goes on falling for tens of thousands
        "early_stopping": {
            "metric": "accuracy",
            "mode": "max",
            "patience_steps": 600,
            "check_every_steps": 100,
        },
    }
    iris_spec["run_config"]["save_checkpoints_steps"] = 300
    proc, result = _k2e(
        "run", _write(tmp_path, iris_spec), "--cluster", "workers=1,ps=1,evaluator=1"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert result["train"]["stopped_early"] and result["global_step"] < 200000
    evaluator = result["cluster"]["tasks"]["evaluator"]
    assert evaluator["evaluations"] >= 2
    # It stopped after evaluating the checkpoint training ended at, the one the chief
    # published (the step inside a checkpoint can be one past its name: workers run on).
    assert evaluator["global_step"] == result["metrics"]["global_step"]
    assert evaluator["metrics"] == result["metrics"]
    assert os.listdir(os.path.join(iris_spec["model_dir"], "eval"))
    assert "evaluator: training ended at step" in proc.stderr
    assert _versions(iris_spec["export"]["base"]) == ["1"]


@pytest.mark.slow
def test_a_chief_and_an_evaluator_without_workers(iris_spec, tmp_path):
    iris_spec["train"]["steps"] = 600
    iris_spec["run_config"]["save_checkpoints_steps"] = 200
    proc, result = _k2e("run", _write(tmp_path, iris_spec), "--cluster", "evaluator=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert result["version"] == 1 and result["cluster"]["tasks"]["evaluator"]["global_step"] == 600


@pytest.mark.parametrize(
    "layout, field, words",
    [
        (
            "workers=1,evaluator=1",
            "cluster",
            "no ps: between-graph replication keeps the variables",
        ),
        ("workers=two", "--cluster", "is not ROLE=COUNT"),
        ("workers=1,ps=1", "train.early_stopping", "this cluster has no evaluator"),
    ],
)
def test_layouts_that_cannot_work_stop_before_any_process_starts(
    iris_spec, tmp_path, layout, field, words
):
    if field == "train.early_stopping":
        iris_spec["train"]["early_stopping"] = {"patience_steps": 100}
    proc, _ = _k2e("run", _write(tmp_path, iris_spec), "--cluster", layout, timeout=60)
    assert proc.returncode == 2
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith(f"k2e: error: {field}") and words in error, error
    assert "[chief]" not in proc.stderr and not os.path.exists(iris_spec["model_dir"])


def _checkpoint_steps(model_dir):
    return [
        int(p.rsplit("-", 1)[1].split(".")[0])
        for p in glob.glob(os.path.join(model_dir, "model.ckpt-*.index"))
    ]


@pytest.mark.slow
def test_a_killed_worker_stops_the_cluster_clearly_and_a_rerun_resumes(iris_spec, tmp_path):
    iris_spec["train"]["steps"] = 400000  # far more than is trained before the kill
    iris_spec["run_config"]["save_checkpoints_steps"] = 300
    spec = _write(tmp_path, iris_spec)
    launcher = subprocess.Popen(
        [K2E, "run", spec, "--cluster", "workers=1,ps=1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        while not [s for s in _checkpoint_steps(iris_spec["model_dir"]) if s >= 300]:
            assert launcher.poll() is None and time.monotonic() < deadline, "no checkpoint came"
            time.sleep(0.2)
        tasks = psutil.Process(launcher.pid).children()
        next(p for p in tasks if '"type": "worker"' in p.environ().get("TF_CONFIG", "")).kill()
        out, err = launcher.communicate(timeout=120)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 1
    error = err.strip().splitlines()[-1]
    assert error == (
        "k2e: failed: cluster: worker0 was killed by SIGKILL; stopped the other "
        "tasks; a rerun resumes from the last checkpoint in model_dir"
    ), error
    assert _versions(iris_spec["export"]["base"]) == []  # nothing half-published
    saved = max(_checkpoint_steps(iris_spec["model_dir"]))  # the chief saved on SIGTERM
    assert not [p for p in tasks if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]

    proc, result = _k2e(
        "run", spec, "--cluster", "workers=1,ps=1", "--set", f"train.steps={saved + 600}"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert result["version"] == 1 and result["global_step"] >= saved + 600
    assert result["train"]["steps_trained"] <= 600 + 50  # resumed at `saved`, not from 0
