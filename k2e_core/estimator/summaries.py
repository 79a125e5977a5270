"""What TensorBoard shows of a model_dir: the training curves k2e writes (steps.report reads them).

Training writes, every `run_config.save_summary_steps` steps, to model_dir's own run:
`loss` (the mean over the steps since the last point), every compiled metric under the
name evaluation gives it (`accuracy`, ...; over the last 2% of those steps),
`global_step/sec` and `examples/sec`. Evaluation writes the same names to `eval/`, so
train and eval curves overlay; the gate's baseline goes to `eval_baseline/`.
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
    """Writes the training curves every `every_steps` steps (and at `last_step`).

    The loss is the mean of the step losses `progress` (the progress hook, which fetches
    them anyway) saw since the previous point. The compiled metrics are measured on the last
    2% of those steps (`SAMPLED`; 2 of the default 100): updating them is a fetch of its own,
    which costs a small model about a third of a step each time (on a tenth of the steps,
    that was 10-16% of its speed). They are reset after each point. On the other steps this
    hook fetches nothing."""

    SAMPLED = 0.02

    def __init__(self, output_dir, every_steps, last_step, examples_per_step, progress):
        self._output_dir = output_dir
        self._every_steps = every_steps
        self._last_step = last_step
        self._examples_per_step = examples_per_step
        self._progress = progress
        self._sampled = max(1, round(every_steps * self.SAMPLED))

    def begin(self):
        metrics, state = {}, []
        for name, tensor, variables in tf.compat.v1.get_collection(TRAIN_METRICS):
            if name not in metrics:  # under a MirroredStrategy: the first replica's
                metrics[name] = tensor
                state += variables
        self._metrics = metrics
        self._reset = tf.group([v.initializer for v in state]) if state else None
        self._global_step = tf.compat.v1.train.get_global_step()
        self._writer = tf.compat.v1.summary.FileWriterCache.get(self._output_dir)
        self._last = None  # (step, time) of the previous point

    def after_create_session(self, session, coord):
        self._step = int(session.run(self._global_step))  # one step per run from here

    def before_run(self, run_context):
        step = self._step + 1
        due = self._last[0] + self._every_steps if self._last else step
        due = min(due, self._last_step)
        self._due = step >= due
        if self._metrics and step > due - self._sampled:
            return tf.estimator.SessionRunArgs(self._metrics)
        return None

    def after_run(self, run_context, run_values):
        self._step += 1
        if not self._due:
            return
        now = time.perf_counter()
        values = {
            name: float(v) for name, v in (run_values.results or {}).items() if np.ndim(v) == 0
        }
        loss = self._progress.take_mean_loss()
        if loss is not None:
            values["loss"] = loss
        if self._last is not None:
            rate = (self._step - self._last[0]) / max(now - self._last[1], 1e-9)
            values["global_step/sec"] = rate
            values["examples/sec"] = rate * self._examples_per_step
        self._writer.add_summary(scalars(values), self._step)
        self._last = (self._step, now)
        if self._reset is not None:
            run_context.session.run(self._reset)

    def exclude(self, seconds):
        """Leaves time the loop spent on something else (an evaluation) out of steps/s."""
        if self._last is not None:
            self._last = (self._last[0], self._last[1] + seconds)

    def end(self, session):
        self._writer.flush()


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
