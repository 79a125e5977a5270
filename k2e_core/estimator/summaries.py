"""What TensorBoard shows of a model_dir: the training curves k2e writes (steps.report reads them).

Training writes, every `run_config.save_summary_steps` steps, to model_dir's own run:
`loss` (the mean over the steps since the last point), every compiled metric under the
name evaluation gives it (`accuracy`, ...; over the same steps), `global_step/sec` and
`examples/sec`. Evaluation writes the same names to `eval/`, so train and eval curves
overlay; the gate's baseline goes to `eval_baseline/`.
"""

from __future__ import annotations

import time

import numpy as np

from k2e_core.estimator.compat import tf

TRAIN_METRICS = "k2e_train_metrics"  # graph collection of (name, result, state variables)


def collect_train_metrics(results: dict) -> None:
    """Called by the model_fn in TRAIN mode: {evaluation's name: (the metric's running result
    tensor, its state variables)}."""
    for name, (tensor, variables) in results.items():
        tf.compat.v1.add_to_collection(TRAIN_METRICS, (name, tensor, list(variables)))


class TrainSummaryHook(tf.estimator.SessionRunHook):
    """Writes the training curves. The metrics' running values are fetched every step (as
    `fit` updates them every batch) and reset after each point, so a point covers the steps
    since the previous one."""

    def __init__(self, output_dir: str, every_steps: int, last_step: int, examples_per_step: int):
        self._output_dir = output_dir
        self._every_steps = every_steps
        self._last_step = last_step
        self._examples_per_step = examples_per_step

    def begin(self):
        losses = tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.LOSSES)
        metrics, state = {}, []
        for name, tensor, variables in tf.compat.v1.get_collection(TRAIN_METRICS):
            if name not in metrics:  # under a MirroredStrategy: the first replica's
                metrics[name] = tensor
                state += variables
        self._fetches = {"step": tf.compat.v1.train.get_global_step(), "metrics": metrics}
        if losses:
            self._fetches["loss"] = losses[-1]
        self._reset = tf.group([v.initializer for v in state]) if state else None
        self._writer = tf.compat.v1.summary.FileWriterCache.get(self._output_dir)
        self._losses = []
        self._last = None  # (step, time) of the previous point

    def before_run(self, run_context):
        return tf.estimator.SessionRunArgs(self._fetches)

    def after_run(self, run_context, run_values):
        results = run_values.results
        step = int(results["step"]) + 1
        if "loss" in results:
            self._losses.append(float(results["loss"]))
        now = time.perf_counter()
        if self._last is None:
            self._last = (step, now)
            self._write(step, results, rate=None)
            self._clear(run_context.session)
        elif step - self._last[0] >= self._every_steps or step == self._last_step:
            rate = (step - self._last[0]) / max(now - self._last[1], 1e-9)
            self._last = (step, now)
            self._write(step, results, rate)
            self._clear(run_context.session)

    def exclude(self, seconds):
        """Leaves time the loop spent on something else (an evaluation) out of steps/s."""
        if self._last is not None:
            self._last = (self._last[0], self._last[1] + seconds)

    def end(self, session):
        self._writer.flush()

    def _write(self, step, results, rate):
        values = {name: float(v) for name, v in results["metrics"].items() if np.ndim(v) == 0}
        if self._losses:
            values["loss"] = sum(self._losses) / len(self._losses)
        if rate is not None:
            values["global_step/sec"] = rate
            values["examples/sec"] = rate * self._examples_per_step
        self._writer.add_summary(scalars(values), step)

    def _clear(self, session):
        self._losses = []
        if self._reset is not None:
            session.run(self._reset)


def scalars(values: dict):
    return tf.compat.v1.Summary(
        value=[tf.compat.v1.Summary.Value(tag=tag, simple_value=v) for tag, v in values.items()]
    )


def write_scalars(directory: str, step: int, values: dict) -> None:
    """One point per value at `step`, in the run at `directory` (the gate's baseline)."""
    with tf.Graph().as_default():  # the v1 writer refuses eager mode
        writer = tf.compat.v1.summary.FileWriter(directory)
        writer.add_summary(scalars({k: float(v) for k, v in values.items() if v is not None}), step)
        writer.close()
