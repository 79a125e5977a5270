"""Training and evaluation of a converted Estimator, with clean progress logs."""

from __future__ import annotations

import contextlib
import logging
import math
import time

import numpy as np

from k2e_core.distributed import cluster
from k2e_core.errors import Diverged
from k2e_core.estimator import compat, summaries
from k2e_core.estimator.compat import tf
from k2e_core.inputs import pipeline
from k2e_core.inputs.data import loss_name
from k2e_core.logs import progress_hook
from k2e_core.stopping import Stopped, stop_requested

log = logging.getLogger("k2e.training")


class _StopOnRequest(tf.estimator.SessionRunHook):
    def after_run(self, run_context, run_values):
        if stop_requested():
            run_context.request_stop()  # the checkpoint saver's end() saves this step


@contextlib.contextmanager
def _training(estimator, progress):
    """Around a training loop: a NaN loss becomes `Diverged`, and the event files are closed
    after it (TensorFlow keeps a writer thread and an open file per directory for the life
    of the process: a worker running job after job would pile them up)."""
    try:
        yield
    except tf.compat.v1.train.NanLossDuringTrainingError:
        step = progress.last_step or global_step(estimator) + 1
        kept = estimator.latest_checkpoint()
        raise Diverged.at(step, kept) from None
    finally:
        tf.compat.v1.summary.FileWriterCache.clear()


def _raise_if_stopped(estimator):
    if stop_requested():
        raise Stopped(global_step(estimator), estimator.latest_checkpoint())


def run_config(spec, model_dir: str, task=None) -> tf.estimator.RunConfig:
    """RunConfig from the spec. Estimator's own step logging and summaries are replaced by
    k2e's progress hook and training curves (`summaries`); checkpoints default to every 60 s:
    each costs throughput on small models (a checkpoint every 1000 steps cost a fast model a
    fifth). `task`: a cluster task; RunConfig reads its role from TF_CONFIG."""
    rc = spec.run_config
    config = tf.estimator.RunConfig(
        model_dir=model_dir,
        tf_random_seed=rc.tf_random_seed,
        save_summary_steps=None,
        save_checkpoints_steps=rc.save_checkpoints_steps,
        save_checkpoints_secs=rc.save_checkpoints_secs,
        keep_checkpoint_max=rc.keep_checkpoint_max,
        log_step_count_steps=None,
    )
    # Given to the constructor, a strategy would switch RunConfig to the distribute
    # coordinator, which starts no TensorFlow servers for train_and_evaluate's roles.
    return config.replace(**cluster.run_config_settings(spec)) if task else config


class DroppedRows(tf.estimator.SessionRunHook):
    """Reads, when training ends, how many rows the input pipeline dropped for a missing
    value (data.missing: drop), and logs it."""

    def __init__(self):
        self.count = None
        self._counter = None

    def begin(self):
        self._counter = next(
            (
                v
                for v in tf.compat.v1.local_variables()
                if v.op.name.endswith(pipeline.DROPPED_ROWS)
            ),
            None,
        )

    def end(self, session):
        if self._counter is not None:
            self.count = int(session.run(self._counter))
            log.info("training dropped %d rows with missing values", self.count)


def _training_hooks(estimator, spec, examples_per_step, chief=True):
    """Progress, stop-on-request, the rows dropped for missing values and, on the chief,
    TensorBoard's training curves."""
    progress = progress_hook(spec.train.steps, spec.run_config.log_every_secs)
    hooks = [progress, _StopOnRequest(), DroppedRows()]
    if chief and spec.run_config.save_summary_steps:
        hooks.append(
            summaries.TrainSummaryHook(
                estimator.model_dir,
                spec.run_config.save_summary_steps,
                spec.train.steps,
                examples_per_step,
                progress,
            )
        )
    return progress, hooks


def global_step(estimator) -> int:
    """The step of the latest checkpoint (Estimator names them model.ckpt-<step>)."""
    ckpt = estimator.latest_checkpoint()
    return int(ckpt.rsplit("-", 1)[1]) if ckpt else 0


def _starts_training(estimator, spec) -> bool:
    """Logs where training goes from; False when model_dir already holds train.steps."""
    start_step, target = global_step(estimator), spec.train.steps
    if start_step >= target:
        log.info(
            "model_dir already holds step %d >= train.steps %d; nothing to train",
            start_step,
            target,
        )
        return False
    log.info("training from step %d to %d", start_step, target)
    return True


def train(estimator, train_input_fn, spec, examples_per_step: int, listeners=()) -> dict:
    """Trains to `spec.train.steps` total steps (a rerun resumes and stops there)."""
    target = spec.train.steps
    if not _starts_training(estimator, spec):
        return _train_result(estimator, 0.0)
    hook, hooks = _training_hooks(estimator, spec, examples_per_step)
    began = time.perf_counter()
    with _training(estimator, hook):
        estimator.train(
            train_input_fn, max_steps=target, hooks=hooks, saving_listeners=list(listeners)
        )
    _raise_if_stopped(estimator)
    return _train_result(estimator, time.perf_counter() - began, hook, examples_per_step, hooks)


def _train_result(estimator, wall_seconds, hook=None, examples_per_step=0, hooks=()):
    """Wall time includes graph building; steps/s and examples/s are the steady-state rate."""
    steps = hook.steps if hook else 0
    rate = hook.rate if hook else None
    dropped = next((h.count for h in hooks if isinstance(h, DroppedRows)), None)
    return {
        **({"rows_dropped": dropped} if dropped is not None else {}),
        "model_dir": estimator.model_dir,
        "checkpoint": estimator.latest_checkpoint(),
        "global_step": global_step(estimator),
        "steps_trained": steps,
        "train_seconds": round(wall_seconds, 3),
        "steps_per_second": round(rate, 2) if rate else None,
        "examples_per_second": round(rate * examples_per_step, 1) if rate else None,
    }


def evaluate(estimator, eval_input_fn, spec, label=None, checkpoint=None) -> dict:
    """Evaluates the latest checkpoint (or `checkpoint`, a prefix); `label` names what it is
    in the log (default: its step)."""
    began = time.perf_counter()
    try:
        metrics = estimator.evaluate(
            eval_input_fn, steps=spec.eval.steps, checkpoint_path=checkpoint
        )
    finally:
        tf.compat.v1.summary.FileWriterCache.clear()  # as after training
    log.info(
        "evaluated %s in %.1fs: %s",
        label or f"step {metrics.get('global_step', 0)}",
        time.perf_counter() - began,
        _metrics_text(metrics),
    )
    return {"metrics": plain_metrics(metrics), "checkpoint": estimator.latest_checkpoint()}


def _metrics_text(metrics: dict) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != "global_step")


def classes_of(model) -> int | None:
    """The number of classes of a single-output classifier (trained with a categorical
    cross-entropy), else None."""
    if len(model.outputs) != 1:
        return None
    losses = tf.nest.flatten(compat.compile_args(model).get("loss"))
    name = loss_name(losses[0]) if losses else None
    classes = model.outputs[0].shape[-1]
    if isinstance(name, str) and "categorical_crossentropy" in name and classes and classes >= 2:
        return int(classes)
    return None


def confusion_matrix(
    model, dataset, classes: int, weighted_features=False, steps=None, names=None
) -> dict:
    """Rows: true class, columns: predicted class, counted over `dataset` (features, labels)."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    for features, labels in dataset.take(steps) if steps else dataset:
        if weighted_features:
            features = features["features"]
        predicted = np.argmax(model(features, training=False).numpy(), axis=-1).reshape(-1)
        truth = tf.nest.flatten(labels)[0].numpy()
        if truth.ndim > 1 and truth.shape[-1] == classes:  # one-hot labels
            truth = truth.argmax(axis=-1)
        np.add.at(matrix, (truth.reshape(-1).astype(np.int64), predicted), 1)
    return {
        "categories": list(names) if names else [str(i) for i in range(classes)],
        "matrix": matrix.tolist(),
    }


def plain_metrics(metrics: dict) -> dict:
    out = {}
    for key, value in metrics.items():
        value = value.item() if hasattr(value, "item") else value
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        out[key] = value
    return out


class _LogEvaluations(compat.ContinuousEvalListener):
    """Logs each evaluation during training, and leaves its time out of the training rate."""

    def __init__(self, hooks):
        self._clocks = [hook for hook in hooks if hasattr(hook, "exclude")]
        self.evaluations = 0

    def before_eval(self):
        self._began = time.perf_counter()
        return True

    def after_eval(self, eval_result):
        seconds = time.perf_counter() - self._began
        for clock in self._clocks:
            clock.exclude(seconds)
        self.evaluations += 1
        metrics = eval_result.metrics or {}
        log.info(
            "evaluated step %d in %.1fs: %s",
            metrics.get("global_step", 0),
            seconds,
            _metrics_text(metrics),
        )
        return True


def early_stopping_hook(estimator, spec):
    """A stop hook that also works under train_distribute (step-based, not time-based)."""
    es = spec.train.early_stopping
    make = (
        tf.estimator.experimental.stop_if_no_decrease_hook
        if es.mode == "min"
        else tf.estimator.experimental.stop_if_no_increase_hook
    )
    return make(
        estimator,
        es.metric,
        es.patience_steps,
        min_steps=es.min_steps,
        run_every_secs=None,
        run_every_steps=es.check_every_steps,
    )


def train_and_evaluate(
    estimator, train_input_fn, eval_input_fn, spec, examples_per_step, listeners=()
) -> dict:
    """`tf.estimator.train_and_evaluate`: evaluations at `spec.eval_every_steps()` (with a
    checkpoint at each) or at checkpoints, and early stopping on `train.early_stopping`.
    The result's `metrics` are the last evaluation's."""
    if not _starts_training(estimator, spec):
        return _train_result(estimator, 0.0)
    progress, hooks = _training_hooks(estimator, spec, examples_per_step)
    if spec.train.early_stopping:
        hooks.insert(1, early_stopping_hook(estimator, spec))
    compat.also_checkpoint_every(estimator, spec.eval_every_steps())
    train_spec = tf.estimator.TrainSpec(
        train_input_fn, max_steps=spec.train.steps, hooks=hooks, saving_listeners=list(listeners)
    )
    eval_spec = tf.estimator.EvalSpec(
        eval_input_fn,
        steps=spec.eval.steps,
        throttle_secs=spec.eval.throttle_secs,
        start_delay_secs=0,
    )
    began = time.perf_counter()
    with _training(estimator, progress):
        listener = _LogEvaluations(hooks)
        evaluation, _ = compat.TrainingExecutor(
            estimator, train_spec, eval_spec, continuous_eval_listener=listener
        ).run_local()
    _raise_if_stopped(estimator)
    result = _train_result(
        estimator, time.perf_counter() - began, progress, examples_per_step, hooks
    )
    if evaluation:
        result["metrics"] = plain_metrics(evaluation)
        result["evaluations"] = listener.evaluations
    result["stopped_early"] = result["global_step"] < spec.train.steps
    if result["stopped_early"]:
        log.info(
            "early stopping at step %d: %s did not improve for %d steps",
            result["global_step"],
            spec.train.early_stopping.metric,
            spec.train.early_stopping.patience_steps,
        )
    return result


def train_in_cluster(
    estimator, train_input_fn, eval_input_fn, spec, task, examples_per_step, listeners=()
) -> dict:
    """This task's part of `train_and_evaluate` in a cluster: the chief and the workers train
    (the chief also checkpoints, and stops everyone early when asked), the evaluator
    evaluates each new checkpoint until training has ended, a ps serves variables until it
    is stopped."""
    model_dir = estimator.model_dir
    progress, hooks = _training_hooks(estimator, spec, examples_per_step, chief=task.is_chief)
    compat.also_checkpoint_every(estimator, spec.eval_every_steps())
    if spec.train.early_stopping:
        hooks.insert(1, early_stopping_hook(estimator, spec))
    train_spec = tf.estimator.TrainSpec(
        train_input_fn, max_steps=spec.train.steps, hooks=hooks, saving_listeners=list(listeners)
    )
    eval_spec = tf.estimator.EvalSpec(
        eval_input_fn,
        steps=spec.eval.steps,
        start_delay_secs=0,
        throttle_secs=max(spec.eval.throttle_secs, 1),
    )
    listener = (
        cluster.evaluator_listener(model_dir, spec.train.steps)
        if task.type == "evaluator"
        else None
    )
    if task.is_chief:
        cluster.mark_training(model_dir, spec.train.steps, None)
    cluster.prepare_process(task)
    log.info(
        "%s: %s",
        task.name,
        {
            "chief": "training, checkpointing",
            "worker": "training",
            "ps": "serving variables",
            "evaluator": "evaluating new checkpoints",
        }[task.type],
    )
    began = time.perf_counter()
    with _training(estimator, progress):
        compat.TrainingExecutor(
            estimator, train_spec, eval_spec, continuous_eval_listener=listener
        ).run()
    _raise_if_stopped(estimator)
    if task.type == "evaluator":
        step, metrics = listener.last or (None, {})
        return {
            "evaluations": listener.evaluations,
            "global_step": step,
            "metrics": plain_metrics(metrics),
        }
    result = _train_result(
        estimator, time.perf_counter() - began, progress, examples_per_step, hooks
    )
    if task.is_chief:
        cluster.mark_training(model_dir, spec.train.steps, result["global_step"])
        result["stopped_early"] = result["global_step"] < spec.train.steps
    else:  # checkpoints are the chief's, and may lag: the step this worker last saw
        result.pop("checkpoint")
        result["global_step"] = progress.final_step
    return result
