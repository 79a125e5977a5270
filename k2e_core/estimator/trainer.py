"""The Estimator trainer (trainer: estimator): the Keras model converted to an Estimator
(or a pre-made Estimator), trained, evaluated and exported by TensorFlow 2.15; a cluster's
tasks through TF_CONFIG; the pre-made baseline."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import tempfile
import time

from k2e_core import storage
from k2e_core.distributed import cluster
from k2e_core.errors import SpecError, first_line
from k2e_core.estimator import (
    conversion,
    export,
    keras_copies,
    keras_model,
    model_fn,
    premade,
    summaries,
    training,
    warm_start,
)
from k2e_core.estimator.compat import tf
from k2e_core.inputs import data
from k2e_core.objects import spec_custom_objects
from k2e_core.steps import warm_start as sources
from k2e_core.steps.model_dir import ModelDir
from k2e_core.trainer import Seed, Trainer

log = logging.getLogger("k2e.job")


class EstimatorTrainer(Trainer):
    name = "estimator"

    @staticmethod
    def load_model(spec, staging_dir):
        if spec.model.premade is not None:
            return None, {}
        objects = spec_custom_objects(spec)
        return keras_model.load(spec, objects), objects

    @staticmethod
    def warm_start(model, model_dir, spec, staging_dir):
        if model is None:
            return Seed()
        return warm_start.seed(model, model_dir, spec, staging_dir)

    def __init__(self, job):
        super().__init__(job)
        self.premade = job.spec.model.premade
        self.export_outputs = export.export_outputs_from_spec(job.spec.model.export_outputs)
        self.convert_seconds = None

    # -- what the data must feed

    def model_io(self):
        job = self.job
        if job.model is None:
            return premade.model_io(job.spec.data, job.data.source("train"))
        return keras_model.model_io(job.model)

    def run_loss(self):
        return keras_model.run_loss(self.job.model)

    def locate_warm_start(self) -> None:
        sources.locate(self.job.spec)

    def examples(self):
        """A pre-made model's (plan, columns) -> (features, labels); None: the model's inputs."""
        return None if self.premade is None else premade.example(self.design)

    @functools.cached_property
    def design(self) -> premade.Design:
        """A pre-made model's feature columns and head: model_dir's, or decided now from the
        training data (and kept in model_dir)."""
        job = self.job
        design = premade.load_design(job.model_dir.path)
        if design is None:
            design = premade.decide(
                job.data.plan,
                job.data.source("train"),
                job.spec.data,
                "model.premade",
                self.premade.n_classes,
            )
            if job.model_dir.writable and job.leads:
                premade.save_design(job.model_dir.path, design)
        return design

    # -- model_dir

    @functools.cached_property
    def estimator(self):
        """The Estimator of the warm-started model. In a step that reads data (all but
        convert), its predictions carry class names and model_dir records what the data
        resolved to: the plan is built first, whatever asked for the Estimator."""
        job, spec = self.job, self.job.spec
        if self.premade is not None:
            return self._premade_estimator()
        began = time.perf_counter()
        try:
            estimator = conversion.convert(
                keras_model=job.model,
                custom_objects=job.custom_objects,
                config=training.run_config(spec, job.model_dir.path, job.task),
                checkpoint_format=spec.model.checkpoint_format,
                metric_names_map=spec.model.metric_names_map,
                export_outputs=self.export_outputs,
                optimizer_state_from=job.optimizer_state,
                class_names=job.data.class_names() if job.reads_data else None,
                output_losses=True,
            )
        except SpecError:
            raise
        except ValueError as err:  # conversion's messages start with the argument they name
            argument, _, text = str(err).partition(": ")
            field = {"model_dir": "model_dir", "metric_names_map": "model.metric_names_map"}.get(
                argument
            )
            raise SpecError(field or "model", text if field else str(err)) from None
        self.convert_seconds = time.perf_counter() - began
        if job.reads_data and job.model_dir.writable and job.leads:
            job.data.save_record()
        log.info(
            "converted %s to an Estimator in %.2fs (model_dir %s)",
            job.model.name,
            self.convert_seconds,
            storage.redact(job.model_dir.url),
        )
        job.model_dir.sync()
        return estimator

    def _premade_estimator(self):
        job = self.job
        began = time.perf_counter()
        config = training.run_config(job.spec, job.model_dir.path, job.task)
        estimator = premade.estimator(self.design, self.premade, config)
        self.convert_seconds = time.perf_counter() - began
        if job.model_dir.writable and job.leads:
            job.data.save_record()
        log.info("model: %s", premade.describe(self.design, self.premade))
        job.model_dir.sync()
        return estimator

    def prepare(self) -> float:
        self.estimator  # noqa: B018 - built on first use
        return self.convert_seconds

    def latest_checkpoint(self):
        return self.estimator.latest_checkpoint()

    def global_step(self) -> int:
        return training.global_step(self.estimator)

    def convert_result(self) -> dict:
        if self.premade:
            return {}
        return {"keras_checkpoint": storage.join(self.job.model_dir.url, data.KERAS_DIR)}

    # -- training, evaluation, export

    def train(self) -> dict:
        job, spec = self.job, self.job.spec
        est = self.estimator
        if job.task is not None:
            return training.train_in_cluster(
                est,
                job.data.input_fn("train"),
                job.data.input_fn("eval"),
                spec,
                job.task,
                spec.data.batch_size,
                job.model_dir.listeners(),
            )
        if spec.train.early_stopping or spec.eval.every_steps != "end":
            return training.train_and_evaluate(
                est,
                job.data.input_fn("train"),
                job.data.input_fn("eval"),
                spec,
                spec.data.batch_size,
                job.model_dir.listeners(),
            )
        return training.train(
            est, job.data.input_fn("train"), spec, spec.data.batch_size, job.model_dir.listeners()
        )

    def evaluate(self, label=None) -> dict:
        return training.evaluate(
            self.estimator, self.job.data.input_fn("eval"), self.job.spec, label
        )

    def metric_names(self) -> list[str]:
        job = self.job
        if self.premade is not None:
            return premade.metric_names(self.design.head, self.design.n_classes)
        return model_fn.evaluation_metric_names(
            job.model, job.spec.model.metric_names_map, job.custom_objects
        )

    def confusion_matrix(self) -> dict | None:
        """A classifier's confusion matrix on the eval data at the latest checkpoint; None
        for other models (and pre-made ones)."""
        job = self.job
        if job.model is None:
            return None
        classes = training.classes_of(job.model)
        if not classes:
            return None
        trained = keras_copies.keras_model_at(
            job.model, self.latest_checkpoint(), job.spec.model.checkpoint_format
        )
        return training.confusion_matrix(
            trained,
            job.data.input_fn("eval")(),
            classes,
            weighted_features=data.for_source(job.data.plan, job.data.source("eval")).sample_weight,
            steps=job.spec.eval.steps,
            names=next(iter(job.data.class_names().values()), None),
        )

    def evaluate_version(self, version_url, version, label) -> dict:
        """The version's variables in this model (or pre-made Estimator), evaluated by the
        Estimator in a directory of its own."""
        job = self.job
        prefix = sources.version_checkpoint(version_url, os.path.join(job.staging_dir, "baseline"))
        if self.premade is not None:
            metrics = self._evaluate_premade_version(prefix, version, label)
        else:
            metrics = self._evaluate_keras_version(prefix, version, label)
        metrics = {k: v for k, v in metrics.items() if k != "global_step"}
        if job.model_dir.writable and job.leads:  # beside the candidate's evaluation
            step = self.global_step()
            summaries.write_scalars(
                os.path.join(job.model_dir.path, "eval_baseline"), step, metrics
            )
            job.model_dir.sync()
        return metrics

    def _evaluate_keras_version(self, prefix, version, label) -> dict:
        job = self.job
        own = job.model.get_weights()
        try:
            warm_start.apply(
                job.model, prefix, {"url": f"version {version}"}, field="gate.baseline"
            )
            estimator = conversion.convert(
                keras_model=job.model,
                custom_objects=job.custom_objects,
                config=training.run_config(job.spec, os.path.join(job.staging_dir, "baseline_dir")),
                checkpoint_format=job.spec.model.checkpoint_format,
                metric_names_map=job.spec.model.metric_names_map,
                export_outputs=self.export_outputs,
            )
        finally:
            job.model.set_weights(own)
        return training.evaluate(estimator, job.data.input_fn("eval"), job.spec, label)["metrics"]

    def _evaluate_premade_version(self, prefix, version, label) -> dict:
        job = self.job
        config = training.run_config(job.spec, os.path.join(job.staging_dir, "baseline_dir"))
        estimator = premade.estimator(self.design, self.premade, config)
        try:
            return training.evaluate(
                estimator, job.data.input_fn("eval"), job.spec, label, checkpoint=prefix
            )["metrics"]
        except (tf.errors.NotFoundError, tf.errors.InvalidArgumentError) as err:
            raise SpecError(
                "gate.baseline",
                f"version {version} does not fit this model ({first_line(err, 160)})",
                "",
            ) from None

    def export_verified(self, sample) -> tuple[str, dict]:
        job, spec = self.job, self.job.spec
        if self.premade is not None:
            return premade.export_verified(
                self.estimator,
                job.io,
                job.data.plan,
                self.design,
                spec.export,
                sample and sample[0],
            )
        return export.export_verified(
            self.estimator,
            job.model,
            job.io,
            spec.export,
            self.export_outputs,
            sample,
            spec.model.checkpoint_format,
            job.data.plan,
        )

    # -- the pre-made baseline

    def check_baseline(self, trained: bool = False) -> None:
        """Before any work: the pre-made baseline fits the model (one head; numbers and
        text); with `trained`, model_dir holds it (the train step trains it)."""
        job = self.job
        premade.refuse_unfit_inputs(job.data.plan, "baseline")
        premade.head_of(job.data.plan)
        url = storage.join(job.model_dir.url, premade.BASELINE_DIR)
        design = storage.join(url, data.KERAS_DIR, premade.DESIGN_FILE)
        if trained and not (
            storage.exists(design) and storage.exists(storage.join(url, "checkpoint"))
        ):
            raise SpecError(
                "baseline",
                f"{storage.redact(url)} holds no trained baseline",
                "run the train step first (it trains the baseline after the model), or k2e run",
            )

    def baseline_metric_names(self) -> list[str]:
        head, _, _, classes = premade.head_of(self.job.data.plan)
        return premade.metric_names(head, classes)

    def train_baseline(self) -> dict:
        """Trains the pre-made baseline to baseline.steps (default train.steps) on the
        training data; a rerun resumes. A baseline that fails to train fails the step."""
        job, spec = self.job, self.job.spec
        baseline = Baseline(job, train=True)
        log.info("baseline: %s", premade.describe(baseline.design, spec.baseline))
        steps = spec.baseline.steps or spec.train.steps
        budget = spec.model_copy(
            update={"train": spec.train.model_copy(update={"steps": steps, "early_stopping": None})}
        )
        with contextlib.closing(baseline.model_dir):
            try:
                with job.data.errors("train"):
                    trained = training.train(
                        baseline.estimator,
                        job.data.input_fn("train", baseline.example, shard=False),
                        budget,
                        spec.data.batch_size,
                        baseline.model_dir.listeners(),
                    )
            except training.Diverged as err:
                raise training.Diverged(f"baseline {baseline.name}: {err}") from None
            except (ValueError, TypeError, tf.errors.OpError) as err:
                raise SpecError(
                    "baseline",
                    f"{baseline.name} failed to train ({first_line(err, 200)})",
                    "change the baseline's options, or leave the baseline out",
                ) from None
            baseline.model_dir.sync()
        figures = ("steps_trained", "train_seconds", "steps_per_second", "examples_per_second")
        return baseline.record(**{k: trained[k] for k in figures})

    def measure_baseline(self, trained: dict | None = None) -> dict:
        """The pre-made baseline's metrics on the job's eval data, at its latest checkpoint."""
        job = self.job
        baseline = Baseline(job)
        label = f"pre-made baseline {baseline.name}"
        with contextlib.closing(baseline.model_dir):
            with job.data.errors("eval"):
                metrics = training.evaluate(
                    baseline.estimator, job.data.input_fn("eval", baseline.example), job.spec, label
                )["metrics"]
            baseline.model_dir.sync()
        return baseline.record(**(trained or {}), metrics=metrics)


class Baseline:
    """The job's pre-made baseline in model_dir/baseline: its design (decided from the
    training data by the train step, read back by later steps) and its Estimator."""

    def __init__(self, job, train: bool = False):
        spec = job.spec
        self.spec = spec.baseline
        url = storage.join(job.model_dir.url, premade.BASELINE_DIR)
        mode = "train" if job.model_dir.writable else "read"
        staging = tempfile.mkdtemp(prefix="baseline-", dir=job.staging_dir)
        self.model_dir = ModelDir.open(url, staging, mode)
        self.design = premade.load_design(self.model_dir.path)
        if self.design is None and train:
            self.design = premade.decide(
                job.data.plan, job.data.source("train"), spec.data, "baseline"
            )
            premade.save_design(self.model_dir.path, self.design)
        if self.design is None:  # check_baseline said so before any work
            raise SpecError("baseline", f"{storage.redact(url)} holds no trained baseline", "")
        self.name = premade.ESTIMATORS[(self.spec.kind, self.design.head)]
        with cluster.single_process():  # in a cluster, the chief trains it alone
            config = training.run_config(spec, self.model_dir.path)
        self.estimator = premade.estimator(self.design, self.spec, config)
        self.example = premade.example(self.design)

    def record(self, **values) -> dict:
        return {
            "kind": self.spec.kind,
            "estimator": self.name,
            "model_dir": storage.redact(self.model_dir.url),
            "global_step": training.global_step(self.estimator),
            **values,
        }


TRAINER = EstimatorTrainer
