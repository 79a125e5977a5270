"""Training and evaluation on Keras 3 with what the Estimator gave: checkpoints every N steps
or seconds that a rerun resumes at the step reached (optimizer state included), evaluation
during training, TensorBoard curves under the Estimator trainer's tags and runs, early
stopping, a checkpoint and a clean stop on SIGTERM.

Training is one `model.fit` over "spans" of steps (its epochs): a span ends wherever
something is due (a curve point, a checkpoint, an evaluation, an early-stopping check), and
`fit` keeps its input iterator from one span to the next, so the data runs on as in one
epoch. Between spans nothing runs per step: the speed is `fit`'s."""

from __future__ import annotations

import logging
import math
import os
import time

import keras
import numpy as np

from k2e_core.errors import Diverged, SpecError, first_line
from k2e_core.stopping import Stopped, stop_requested
from k2e_core.tf_runtime import tf

log = logging.getLogger("k2e.training")

CHECKPOINT_NAME = "model.ckpt"  # model.ckpt-<step>, as the Estimator names them
EVAL_RUN = "eval"


class Checkpoints:
    """model_dir's step checkpoints: the model's variables and the optimizer's (its step
    count, `iterations`, is the global step)."""

    def __init__(self, model, model_dir: str, keep: int, on_save=None, url: str | None = None):
        model.optimizer.build(model.trainable_variables)  # slots exist before a restore
        self.model = model
        self.on_save = on_save  # on_save(step): a remote model_dir uploads it
        self.url = url or model_dir  # model_dir as the user named it
        self.optimizer_class = type(model.optimizer).__name__
        self.checkpoint = tf.train.Checkpoint(
            model=model,
            optimizer=model.optimizer,
            optimizer_class=tf.Variable(self.optimizer_class, dtype=tf.string, trainable=False),
        )
        self.manager = tf.train.CheckpointManager(
            self.checkpoint,
            model_dir,
            max_to_keep=keep or None,
            checkpoint_name=CHECKPOINT_NAME,
        )

    @property
    def step(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    @property
    def latest(self) -> str | None:
        return self.manager.latest_checkpoint

    def restore(self) -> int:
        """The latest checkpoint's weights and optimizer state, if any; its step. A
        checkpoint of another model, or of the Estimator trainer, is refused in one line."""
        if self.latest:
            self._check_optimizer()
            try:
                self.checkpoint.restore(self.latest).assert_existing_objects_matched()
            except (AssertionError, ValueError, tf.errors.OpError) as err:
                raise SpecError(
                    "model_dir",
                    f"{os.path.basename(self.latest)} is not a checkpoint of this model on the "
                    f"keras trainer ({first_line(err, 160)})",
                    "give the job a new model_dir, with warm_start set to this one to start "
                    "from its weights (the Estimator trainer's included)",
                ) from None
        return self.step

    def _check_optimizer(self) -> None:
        """Resuming with another optimizer would start its state afresh mid-run."""
        reader = tf.train.load_checkpoint(self.latest)
        key = "optimizer_class/.ATTRIBUTES/VARIABLE_VALUE"
        if not reader.has_tensor(key):
            return  # another model's or trainer's checkpoint: restore names it
        trained_with = reader.get_tensor(key).decode()
        if trained_with != self.optimizer_class:
            raise SpecError(
                "model_dir",
                f"{self.url} holds checkpoints trained with {trained_with}, not "
                f"{self.optimizer_class} ({os.path.basename(self.latest)})",
                f"use a new model_dir (warm_start: {self.url} keeps its weights), or compile "
                "the model with the optimizer it was trained with",
            )

    def save(self) -> str:
        step = self.step
        if self.latest and self.latest.endswith(f"-{step}"):
            return self.latest
        saved = self.manager.save(checkpoint_number=step)
        if self.on_save is not None:
            self.on_save(step)
        return saved


class _Curves:
    """TensorBoard scalars in one run directory, as the Estimator writes them (simple values)."""

    def __init__(self, directory: str):
        self.writer = tf.summary.create_file_writer(directory)

    def write(self, step: int, values: dict) -> None:
        summary = tf.compat.v1.Summary(
            value=[
                tf.compat.v1.Summary.Value(tag=tag, simple_value=float(v))
                for tag, v in values.items()
                if v is not None
            ]
        )
        with self.writer.as_default():
            tf.summary.experimental.write_raw_pb(summary.SerializeToString(), step=step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def write_scalars(directory: str, step: int, values: dict) -> None:
    """One point per value at `step`, in the run at `directory`."""
    curves = _Curves(directory)
    curves.write(step, values)
    curves.close()


def eval_curves(model_dir: str, metrics: dict) -> None:
    """An evaluation's metrics in model_dir's eval run, at its step."""
    values = {k: v for k, v in metrics.items() if k != "global_step"}
    write_scalars(os.path.join(model_dir, EVAL_RUN), metrics["global_step"], values)


def for_fit(to_model):
    """(features, labels) as the input pipeline gives them -> (x, y[, sample_weight])."""

    def split(features, labels):
        if isinstance(features, dict) and set(features) == {"features", "sample_weights"}:
            return to_model(features["features"]), labels, features["sample_weights"]
        return to_model(features), labels

    return split


def _gcd_span(*cadences) -> int:
    every = [c for c in cadences if c]
    return math.gcd(*every) if every else 0


def plain(metrics: dict, names: dict | None = None) -> dict:
    """Keras' logs as numbers, under model.metric_names_map's names where it gives one."""
    names = names or {}
    return {names.get(k, k): float(v) for k, v in metrics.items()}


def _metrics_text(metrics: dict) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != "global_step")


def evaluate(model, dataset, steps, step: int, to_model, label=None, names=None) -> dict:
    """The compiled loss and metrics over `dataset` (`steps` batches, None: all of it),
    renamed by `names` (model.metric_names_map)."""
    began = time.perf_counter()
    metrics = model.evaluate(dataset.map(to_model), steps=steps, return_dict=True, verbose=0)
    metrics = {**plain(metrics, names), "global_step": step}
    log.info(
        "evaluated %s in %.1fs: %s",
        label or f"step {step}",
        time.perf_counter() - began,
        _metrics_text(metrics),
    )
    return metrics


class _Events(keras.callbacks.Callback):
    """What happens between spans: curves, progress, checkpoints, evaluations, early
    stopping, a stop on request."""

    def __init__(self, trainer: Training, first_step: int, span: int):
        super().__init__()
        self.t = trainer
        self.first_step = self.step = first_step
        self.span = span
        self.began = self.last_log = self.last_point = self.last_save = time.perf_counter()
        self.point_step = self.log_step = first_step

    def on_epoch_end(self, epoch, logs=None):
        t, spec = self.t, self.t.spec
        self.step = self.first_step + (epoch + 1) * self.span
        now = time.perf_counter()
        if t.steady is None:  # the first span also traced the train function
            t.steady = (self.step, now)
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(loss):
            raise Diverged.at(self.step, t.checkpoints.latest)
        summary_every = spec.run_config.save_summary_steps
        if t.curves and summary_every and (self.step % summary_every == 0 or self.last):
            seconds = max(now - self.last_point, 1e-9)
            rate = (self.step - self.point_step) / seconds
            t.curves.write(
                self.step,
                {
                    **plain(logs or {}, t.names),
                    "global_step/sec": rate,
                    "examples/sec": rate * t.batch_size,
                },
            )
            self.last_point, self.point_step = now, self.step
        if now - self.last_log >= spec.run_config.log_every_secs or self.last:
            rate = (self.step - self.log_step) / max(now - self.last_log, 1e-9)
            left = (t.total - self.step) / rate if rate > 0 else float("inf")
            text = f"step {self.step}/{t.total}"
            if loss is not None:
                text += f"  loss {loss:.4f}"
            text += f"  {rate:.1f} steps/s"
            text += "  done" if self.last else f"  about {left:.0f}s left"
            log.info(text)
            self.last_log, self.log_step = now, self.step
        saved = False
        if self._checkpoint_due(now):
            t.checkpoints.save()
            self.last_save, saved = time.perf_counter(), True
        if t.eval_every and (self.step % t.eval_every == 0 or self.last):
            if not saved:
                t.checkpoints.save()  # evaluations run on checkpoints, as the Estimator's
                self.last_save = time.perf_counter()
            paused = time.perf_counter()
            t.evaluate_now(self.step)
            self._exclude(time.perf_counter() - paused)
            t.paused += time.perf_counter() - paused
            if t.stops_early(self.step):
                self.model.stop_training = True
        if stop_requested():
            t.checkpoints.save()
            t.stopped = True
            self.model.stop_training = True

    @property
    def last(self) -> bool:
        return self.step >= self.t.total

    def _checkpoint_due(self, now) -> bool:
        rc = self.t.spec.run_config
        if self.last:
            return True
        if rc.save_checkpoints_steps:
            return self.step % rc.save_checkpoints_steps == 0
        return bool(rc.save_checkpoints_secs) and now - self.last_save >= rc.save_checkpoints_secs

    def _exclude(self, seconds: float) -> None:
        self.last_log += seconds
        self.last_point += seconds
        self.began += seconds


class Training:
    """One training run of `model` in `model_dir` to `spec.train.steps` total steps."""

    def __init__(
        self, model, spec, model_dir: str, to_model, train_input_fn, eval_input_fn, checkpoints
    ):
        self.model, self.spec, self.model_dir = model, spec, model_dir
        self.for_fit = for_fit(to_model)
        self.train_input_fn, self.eval_input_fn = train_input_fn, eval_input_fn
        self.total = spec.train.steps
        self.batch_size = spec.data.batch_size
        self.checkpoints = checkpoints
        self.names = spec.model.metric_names_map or {}
        self.curves = None
        self.eval_curves = None
        self.evaluations: list[dict] = []
        self.stopped = False
        self.stopped_early = False
        self.steady = None  # (step, time) at the end of the first span
        self.paused = 0.0  # seconds evaluations took, left out of the rates
        every = spec.eval.every_steps
        if every == "checkpoint":
            every = spec.run_config.save_checkpoints_steps
        self.eval_every = every if isinstance(every, int) else spec.eval_every_steps()
        if spec.eval.every_steps == "end" and not spec.train.early_stopping:
            self.eval_every = None

    def run(self) -> dict:
        first = self.checkpoints.step
        remaining = self.total - first
        if remaining <= 0:
            log.info("model_dir is at step %d of %d: nothing to train", first, self.total)
            return self._result(first, 0, 0.0)
        rc = self.spec.run_config
        es = self.spec.train.early_stopping
        span = _gcd_span(
            rc.save_summary_steps,
            rc.save_checkpoints_steps,
            self.eval_every,
            es and es.check_every_steps,
        ) or min(remaining, 100)
        if rc.save_summary_steps:
            self.curves = _Curves(self.model_dir)
        log.info("training from step %d to %d (%d-step spans)", first, self.total, span)
        dataset = self.train_input_fn().map(self.for_fit)
        began = time.perf_counter()
        step = first
        try:
            while step < self.total and not (self.stopped or self.stopped_early):
                this_span = span if (self.total - step) >= span else self.total - step
                spans = (self.total - step) // this_span
                events = _Events(self, step, this_span)
                self.model.fit(
                    dataset,
                    epochs=spans,
                    steps_per_epoch=this_span,
                    verbose=0,
                    callbacks=[events],
                )
                step = self.checkpoints.step
        finally:
            for curves in (self.curves, self.eval_curves):
                if curves:
                    curves.close()
        ended = time.perf_counter()
        if self.stopped:
            raise Stopped(step, self.checkpoints.latest)
        return self._result(step, step - first, ended - began, ended)

    def evaluate_now(self, step: int) -> dict:
        if self.eval_curves is None:
            self.eval_curves = _Curves(os.path.join(self.model_dir, EVAL_RUN))
        metrics = evaluate(
            self.model,
            self.eval_input_fn(),
            self.spec.eval.steps,
            step,
            self.for_fit,
            None,
            self.names,
        )
        self.eval_curves.write(step, {k: v for k, v in metrics.items() if k != "global_step"})
        self.evaluations.append(metrics)
        return metrics

    def stops_early(self, step: int) -> bool:
        es = self.spec.train.early_stopping
        if not es or step < es.min_steps or not self.evaluations:
            return False
        values = [(m["global_step"], m.get(es.metric)) for m in self.evaluations]
        values = [(s, v) for s, v in values if v is not None]
        if not values:
            return False
        pick = min if es.mode == "min" else max
        best_step = pick(values, key=lambda sv: sv[1])[0]
        if step - best_step >= es.patience_steps:
            self.stopped_early = True
            log.info(
                "early stopping at step %d: %s did not improve for %d steps",
                step,
                es.metric,
                es.patience_steps,
            )
            return True
        return False

    def _result(self, step: int, trained: int, seconds: float, ended=None) -> dict:
        """As the Estimator trainer reports it: the rates are the steady state's, from the
        end of the first span (which also traced the train function) to the end, without
        the evaluations."""
        rate = None
        if self.steady is not None and step > self.steady[0]:
            rate = (step - self.steady[0]) / max(ended - self.steady[1] - self.paused, 1e-9)
        elif seconds and trained:
            rate = trained / seconds
        result = {
            "model_dir": self.model_dir,
            "checkpoint": self.checkpoints.latest,
            "global_step": step,
            "steps_trained": trained,
            "train_seconds": round(seconds, 3),
            "steps_per_second": round(rate, 2) if rate else None,
            "examples_per_second": round(rate * self.batch_size, 1) if rate else None,
        }
        if self.eval_every is not None:
            result["evaluations"] = len(self.evaluations)
            result["stopped_early"] = self.stopped_early
            if self.evaluations:
                result["metrics"] = self.evaluations[-1]
        dropped = getattr(self.train_input_fn, "dropped_rows", None)
        if dropped is not None:
            result["rows_dropped"] = int(dropped.numpy())
        return result
