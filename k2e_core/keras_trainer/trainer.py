"""The Keras trainer (trainer: keras): the job's Keras 3 model trained by `fit` on TensorFlow
2.21, in one process, with the Estimator trainer's model_dir contract (step checkpoints that
resume, evaluation during training, curves) and its published layout and signatures."""

from __future__ import annotations

import logging
import os
import time

import numpy as np

from k2e_core import storage
from k2e_core.errors import SpecError
from k2e_core.inputs import data
from k2e_core.keras_trainer import export, training, warm_start
from k2e_core.keras_trainer import model as keras_model
from k2e_core.objects import spec_custom_objects
from k2e_core.trainer import Trainer, unknown_metric_names

log = logging.getLogger("k2e.job")


class KerasTrainer(Trainer):
    name = "keras"

    @staticmethod
    def load_model(spec, staging_dir):
        objects = spec_custom_objects(spec)
        return keras_model.load(spec, objects, staging_dir), objects

    @staticmethod
    def warm_start(model, model_dir, spec, staging_dir):
        return warm_start.seed(model, model_dir, spec, staging_dir)

    def __init__(self, job):
        super().__init__(job)
        self.names = keras_model.input_names(job.model)
        self.to_model = keras_model.positional(job.model, self.names)
        self.checkpoints = None

    def model_io(self):
        return keras_model.model_io(self.job.model)

    def run_loss(self):
        return keras_model.run_loss(self.job.model, self.names)

    def locate_warm_start(self) -> None:
        warm_start.locate(self.job.spec)

    # -- model_dir

    def prepare(self) -> float:
        """model_dir's latest checkpoint restored; a new model_dir gets its first one (step
        0: the warm-started weights, which later steps start from)."""
        job = self.job
        began = time.perf_counter()
        self._check_metric_names_map()
        self.checkpoints = training.Checkpoints(
            job.model,
            job.model_dir.path,
            job.spec.run_config.keep_checkpoint_max,
            on_save=job.model_dir.saved,
            url=storage.redact(job.model_dir.url),
        )
        step = self.checkpoints.restore()
        if job.reads_data and job.model_dir.writable and job.leads:
            job.data.save_record()
        if self.checkpoints.latest is None and job.model_dir.writable:
            self.checkpoints.save()
        log.info(
            "model %s at step %d in %s",
            job.model.name,
            step,
            storage.redact(job.model_dir.url),
        )
        job.model_dir.sync()
        return time.perf_counter() - began

    def latest_checkpoint(self):
        return self.checkpoints.latest

    def global_step(self) -> int:
        return self.checkpoints.step

    # -- training, evaluation, export

    def train(self) -> dict:
        job = self.job
        return training.Training(
            job.model,
            job.spec,
            job.model_dir.path,
            self.to_model,
            job.data.input_fn("train"),
            job.data.input_fn("eval"),
            self.checkpoints,
        ).run()

    def _evaluated(self, label=None) -> dict:
        """The model's current weights evaluated on the eval data, at this step."""
        job = self.job
        return training.evaluate(
            job.model,
            job.data.input_fn("eval")(),
            job.spec.eval.steps,
            self.global_step(),
            training.for_fit(self.to_model),
            label,
            job.spec.model.metric_names_map,
        )

    def evaluate(self, label=None) -> dict:
        metrics = self._evaluated(label)
        training.eval_curves(self.job.model_dir.path, metrics)
        return {"metrics": metrics, "checkpoint": self.latest_checkpoint()}

    def _keras_logs(self) -> dict:
        """What Keras' evaluate logs on two rows of the eval data: its own metric names."""
        job = self.job
        features, labels = job.data.first_batch("eval", 2)
        batch = training.for_fit(self.to_model)(features, labels)
        return job.model.evaluate(
            *batch[:2],
            sample_weight=batch[2] if len(batch) > 2 else None,
            return_dict=True,
            verbose=0,
        )

    def metric_names(self) -> list[str]:
        """The names `evaluate` reports."""
        return sorted(training.plain(self._keras_logs(), self.job.spec.model.metric_names_map))

    def _check_metric_names_map(self) -> None:
        renamed = self.job.spec.model.metric_names_map
        problem = renamed and unknown_metric_names(self._keras_logs(), renamed)
        if problem:
            raise SpecError("model.metric_names_map", problem)

    def confusion_matrix(self) -> dict | None:
        """A single-output classifier's confusion matrix on the eval data."""
        job = self.job
        classes = _classes_of(job.io)
        if not classes:
            return None
        fit = training.for_fit(self.to_model)
        matrix = np.zeros((classes, classes), dtype=np.int64)
        dataset = job.data.input_fn("eval")()
        if job.spec.eval.steps:
            dataset = dataset.take(job.spec.eval.steps)
        for features, labels in dataset:
            x = fit(features, labels)[0]
            predicted = np.argmax(np.asarray(job.model(x, training=False)), axis=-1).reshape(-1)
            truth = np.asarray(labels).reshape(-1)
            if job.io.label_kinds[job.io.outputs[0]][0] == "onehot":
                truth = np.argmax(np.asarray(labels), axis=-1)
            np.add.at(matrix, (truth.astype(np.int64), predicted), 1)
        names = next(iter(job.data.class_names().values()), None)
        return {
            "categories": list(names) if names else [str(i) for i in range(classes)],
            "matrix": matrix.tolist(),
        }

    def evaluate_version(self, version_url, version, label) -> dict:
        job = self.job
        own = job.model.get_weights()
        try:
            warm_start.apply_version(job.model, version_url, version, job.staging_dir)
            metrics = self._evaluated(label)
        finally:
            job.model.set_weights(own)
        metrics = {k: v for k, v in metrics.items() if k != "global_step"}
        if job.model_dir.writable and job.leads:  # beside the candidate's evaluation
            training.write_scalars(
                os.path.join(job.model_dir.path, "eval_baseline"), self.global_step(), metrics
            )
            job.model_dir.sync()
        return metrics

    def export_verified(self, sample) -> tuple[str, dict]:
        job = self.job
        if self.global_step() == 0 and not job.spec.warm_start:
            raise SpecError(
                "model_dir",
                f"{storage.redact(job.model_dir.url)} holds no trained checkpoint",
                "run the train step first",
            )
        return export.export_verified(
            job.model,
            job.io,
            job.data.plan,
            job.spec.export,
            job.spec.model.export_outputs,
            job.data.class_names(),
            sample,
            self.global_step(),
        )


def _classes_of(io: data.ModelIO) -> int | None:
    if len(io.outputs) != 1:
        return None
    kind, classes = io.label_kinds[io.outputs[0]]
    return classes if kind in ("sparse", "onehot") and classes and classes >= 2 else None


TRAINER = KerasTrainer
