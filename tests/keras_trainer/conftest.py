"""The Keras trainer's tests run in its own interpreter (.venv-keras: TensorFlow 2.21, Keras 3,
Python 3.12); the Estimator trainer's side of a comparison runs in .venv through its CLI, as
a user with both environments would run it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, iris_job

ESTIMATOR_K2E = os.path.join(REPO, ".venv", "bin", "k2e")
KERAS_K2E = os.path.join(os.path.dirname(sys.executable), "k2e")


@pytest.fixture(scope="session")
def tf():
    from k2e_core.tf_runtime import tf

    return tf


def k2e(command: str, spec: dict, tmp_path, *args, trainer="keras", timeout=600):
    """`k2e <command> job.json` in the trainer's interpreter: (exit code, last stdout line as
    JSON or None, stderr)."""
    path = tmp_path / f"job-{trainer}-{command}-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(spec))
    binary = KERAS_K2E if trainer == "keras" else ESTIMATOR_K2E
    proc = subprocess.run(
        [binary, command, str(path), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
    lines = proc.stdout.strip().splitlines()
    result = json.loads(lines[-1]) if proc.returncode == 0 and lines else None
    return proc.returncode, result, proc.stderr


def start(command: str, spec: dict, tmp_path) -> subprocess.Popen:
    path = tmp_path / f"job-{command}-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(spec))
    return subprocess.Popen(
        [KERAS_K2E, command, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


def wait_for_checkpoint(model_dir, proc, above: int = 0, timeout: float = 120) -> int:
    """The step of the first checkpoint after step `above` that appears in model_dir."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        steps = checkpoint_steps(model_dir)
        if any(s > above for s in steps):
            return max(steps)
        if proc.poll() is not None:
            raise AssertionError(f"training ended before a checkpoint: {proc.stderr.read()}")
        time.sleep(0.05)
    raise AssertionError("no checkpoint in time")


def checkpoint_steps(model_dir) -> list[int]:
    if not os.path.isdir(model_dir):
        return []
    return sorted(
        int(name[len("model.ckpt-") : -len(".index")])
        for name in os.listdir(model_dir)
        if name.startswith("model.ckpt-") and name.endswith(".index")
    )


def stop(proc: subprocess.Popen, how=signal.SIGKILL) -> tuple[int, str]:
    proc.send_signal(how)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def iris_spec(example_data, root, **changes) -> dict:
    """The suite's small iris job (`tests.conftest.iris_job`) on the Keras trainer."""
    return {**iris_job(example_data, root), "trainer": "keras", **changes}


def signature_defs(saved_model_dir) -> dict:
    """{signature: (method name, input keys, output keys)} as TF Serving reads them."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    return {
        name: (sig.method_name, sorted(sig.inputs), sorted(sig.outputs))
        for name, sig in saved.meta_graphs[0].signature_def.items()
        if not name.startswith("__")
    }


def event_tags(run_dir) -> set[str]:
    """The scalar tags TensorBoard finds in a run directory."""
    from tensorboard.backend.event_processing import event_accumulator

    accumulator = event_accumulator.EventAccumulator(str(run_dir))
    accumulator.Reload()
    return set(accumulator.Tags()["scalars"])
