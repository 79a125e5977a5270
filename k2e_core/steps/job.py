"""Job steps: each takes a job spec (object, dict or path) and returns a JSON-serialisable dict.

    convert_step -> train_step -> evaluate_step -> export_step      (or run: all four)

Steps are independent: each may run in its own process (an Airflow task, a KFP component)
and finds what earlier steps left in `model_dir`. A step opens its job (`open_job`) in
named steps, in this order:

1. the spec, and the cluster task TF_CONFIG names, if any;
2. preflight: every location the job writes can be written;
3. model_dir: where TensorFlow reads and writes it (`ModelDir`);
4. the Keras model, built or loaded (`keras_model`);
5. the warm start: its weights put into the model, which must happen before conversion
   copies the model (`warm_start.seed`).

The job reaches its data through one object, `Job.data` (`access.DataAccess`: files, the
plan, input functions); the plan and the Estimator are built once, on first use, in any
order (`Job.estimator` builds the plan first in a step that reads data).
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time

from k2e_core import records, registry, signatures, stopping, storage, versions
from k2e_core.distributed import cluster
from k2e_core.errors import K2eError, SpecError, first_line
from k2e_core.estimator import (
    conversion,
    export,
    keras_model,
    premade,
    summaries,
    training,
    warm_start,
)
from k2e_core.estimator.compat import tf
from k2e_core.inputs import access, data, pipeline
from k2e_core.registry import gate
from k2e_core.spec import JobSpec, load_spec
from k2e_core.steps.model_dir import Access, ModelDir
from k2e_core.storage import publish

log = logging.getLogger("k2e.job")


class Job:
    """An opened job: its spec, model_dir and warm-started Keras model (None for a pre-made
    model); the data plan and the Estimator, each built once on first use."""

    def __init__(
        self,
        spec: JobSpec,
        staging_dir: str,
        model_dir: ModelDir,
        model,
        custom_objects: dict,
        seed: warm_start.Seed,
        task: cluster.Task | None = None,
        reads_data: bool = True,
    ):
        self.spec = spec
        self.staging_dir = staging_dir
        self.model_dir = model_dir
        self.model = model
        self.custom_objects = custom_objects
        self.warm_start = seed.record
        self.optimizer_state = seed.optimizer_state
        self.task = task  # this process's cluster task; None: a single process
        self.premade = spec.model.premade
        self.export_outputs = export.export_outputs_from_spec(spec.model.export_outputs)
        self.reads_data = reads_data
        self.convert_seconds = None
        self.data = access.DataAccess(
            spec.data,
            spec.path,
            staging_dir,
            model_dir.path,
            io=lambda: self.io,
            check_labels=None if model is None else self._check_labels,
            seed=spec.run_config.tf_random_seed,
            share=task.data_share if task else None,
            examples=None if self.premade is None else lambda: premade.example(self.design),
        )

    @property
    def leads(self) -> bool:
        """Whether this process writes model_dir's records (a single process or the chief)."""
        return cluster.leads(self.task)

    @functools.cached_property
    def io(self) -> data.ModelIO:
        """The model's inputs and outputs (a pre-made model's: from the data spec and the
        training files' columns)."""
        if self.model is None:
            return premade.model_io(self.spec.data, self.data.source("train"))
        return keras_model.model_io(self.model)

    @functools.cached_property
    def design(self) -> premade.Design:
        """A pre-made model's feature columns and head: model_dir's, or decided now from the
        training data (and kept in model_dir)."""
        design = premade.load_design(self.model_dir.path)
        if design is None:
            design = premade.decide(
                self.data.plan,
                self.data.source("train"),
                self.spec.data,
                "model.premade",
                self.premade.n_classes,
            )
            if self.model_dir.writable and self.leads:
                premade.save_design(self.model_dir.path, design)
        return design

    def _check_labels(self, plan: data.Plan, source: data.Source) -> None:
        pipeline.check_labels_fit(keras_model.run_loss(self.model), plan, source, self.spec.data)

    @functools.cached_property
    def estimator(self):
        """The Estimator of the warm-started model. In a step that reads data (all but
        convert), its predictions carry class names and model_dir records what the data
        resolved to: the plan is built first, whatever asked for the Estimator."""
        spec = self.spec
        if self.premade is not None:
            return self._premade_estimator()
        began = time.perf_counter()
        try:
            estimator = conversion.convert(
                keras_model=self.model,
                custom_objects=self.custom_objects,
                config=training.run_config(spec, self.model_dir.path, self.task),
                checkpoint_format=spec.model.checkpoint_format,
                metric_names_map=spec.model.metric_names_map,
                export_outputs=self.export_outputs,
                optimizer_state_from=self.optimizer_state,
                class_names=self.data.class_names() if self.reads_data else None,
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
        if self.reads_data and self.model_dir.writable and self.leads:
            self.data.save_record()
        log.info(
            "converted %s to an Estimator in %.2fs (model_dir %s)",
            self.model.name,
            self.convert_seconds,
            storage.redact(self.model_dir.url),
        )
        self.model_dir.sync()
        return estimator

    def _premade_estimator(self):
        began = time.perf_counter()
        config = training.run_config(self.spec, self.model_dir.path, self.task)
        estimator = premade.estimator(self.design, self.premade, config)
        self.convert_seconds = time.perf_counter() - began
        if self.model_dir.writable and self.leads:
            self.data.save_record()
        log.info("model: %s", premade.describe(self.design, self.premade))
        self.model_dir.sync()
        return estimator

    def run_id(self) -> str:
        """The spec's run id, or one derived from the checkpoint being exported."""
        if self.spec.run_id:
            return self.spec.run_id
        ckpt = os.path.basename(self.estimator.latest_checkpoint() or "none")
        return "ckpt-" + hashlib.sha256(f"{self.model_dir.url}|{ckpt}".encode()).hexdigest()[:16]

    def check_data(self) -> data.Plan:
        """The plan, built now: bad data stops the step before TensorFlow builds anything."""
        return self.data.plan


@contextlib.contextmanager
def open_job(
    spec,
    overrides=None,
    access: Access = "train",
    in_cluster: bool = False,
    reads_data: bool = True,
):
    """The job, opened in a staging directory removed afterwards. `access`: what the step
    does with model_dir (see `ModelDir.open`); `inspect` also leaves the warm start
    unresolved. `in_cluster`: the step may run as any task TF_CONFIG names; other steps
    refuse one. `reads_data`: False for a step that never reads the data (convert)."""
    spec = load_spec(spec, overrides)
    problem = versions.trainer_problem(spec.trainer)
    if problem:
        raise SpecError("trainer", problem, "")
    task = cluster.current_task(spec)
    if task is not None:
        if not in_cluster:
            raise SpecError(
                "TF_CONFIG",
                f"names a {task.type} task; only `k2e run` and `k2e train` run in a cluster",
                "unset TF_CONFIG for this step",
            )
        cluster.check(task, spec)
    stopping.clear_stop_request()
    staging = tempfile.mkdtemp(prefix="k2e-job-")
    settings = spec.storage
    try:
        with storage.configured(
            settings.options, settings.retries, settings.concurrency, settings.retry_seconds
        ):
            _preflight(spec, access)
            model_dir = ModelDir.open(spec.path(spec.model_dir), staging, access, task)
            with contextlib.closing(model_dir):
                if spec.model.premade is not None:
                    yield Job(spec, staging, model_dir, None, {}, warm_start.Seed(), task)
                    return
                objects = keras_model.custom_objects(spec)
                model = keras_model.load(spec, objects)
                if access == "inspect" or not cluster.leads(task):
                    seed = warm_start.Seed()
                else:
                    seed = warm_start.seed(model, model_dir.path, spec, staging)
                yield Job(spec, staging, model_dir, model, objects, seed, task, reads_data)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _preflight(spec: JobSpec, access: Access) -> None:
    """Every location the job writes can be written, checked before any work is done."""
    places = [] if access == "read" else [("model_dir", spec.path(spec.model_dir), ())]
    if spec.export is not None:  # versions, candidates, claims and gate decisions
        places.append(("export.base", spec.path(spec.export.base), (publish.CANDIDATES, ".k2e")))
    for field, url, below in places:
        try:
            problem = storage.unwritable(url, *below)
        except storage.StorageError as err:
            raise K2eError(f"{field}: cannot reach {storage.redact(url)}: {err}") from None
        if problem:
            fix = (
                "create the bucket, or fix the URL"
                if storage.bucket_of(url)
                else f"point {field} at a directory this user can write"
            )
            raise SpecError(field, f"cannot write to {storage.redact(url)}: {problem}", fix)


def _check_gate_metrics(job: Job) -> None:
    """The gate's metric names against those evaluation will report, before any training."""
    spec = job.spec
    if spec.export is None or not spec.gate.metrics:
        return
    if job.premade is not None:
        reported = premade.metric_names(job.design.head, job.design.n_classes)
    else:
        reported = conversion.evaluation_metric_names(
            job.model, spec.model.metric_names_map, job.custom_objects
        )
    gate.check_metric_names(spec.gate, dict.fromkeys([*reported, "global_step"], 0.0))
    if spec.baseline is not None:
        head, _, _, classes = premade.head_of(job.data.plan)
        known = premade.metric_names(head, classes)
        for name, rule in spec.gate.metrics.items():
            wanted = rule.vs_baseline and (rule.vs_baseline.metric or name)
            if wanted and wanted not in known:
                raise SpecError(
                    f"gate.metrics.{name}.vs_baseline",
                    f"the pre-made baseline reports no {wanted!r}",
                    f"set vs_baseline.metric to one of {known}",
                )


def _check_baseline(job: Job, trained: bool = False) -> None:
    """Before any work: the pre-made baseline fits the model (one head; numbers and text);
    with `trained`, model_dir holds it (the train step trains it)."""
    if job.spec.baseline is None:
        return
    premade.refuse_unfit_inputs(job.data.plan, "baseline")
    premade.head_of(job.data.plan)
    url = storage.join(job.model_dir.url, premade.BASELINE_DIR)
    design = storage.join(url, data.KERAS_DIR, premade.DESIGN_FILE)
    if trained and not (storage.exists(design) and storage.exists(storage.join(url, "checkpoint"))):
        raise SpecError(
            "baseline",
            f"{storage.redact(url)} holds no trained baseline",
            "run the train step first (it trains the baseline after the model), or k2e run",
        )


def _sample_features(job: Job):
    """(rows as a serving client sends them, the same rows as the model sees them)."""
    if not job.spec.export.verify_rows:
        return None
    sent, (seen, _) = pipeline.serving_rows(
        job.data.plan, job.data.source("eval"), job.spec.data, job.spec.export.verify_rows
    )
    plan = data.for_source(job.data.plan, job.data.source("eval"))
    return sent, seen["features"] if plan.sample_weight else seen


# --------------------------------------------------------------------------- steps


def convert_step(spec, overrides=None) -> dict:
    """Converts the model and writes its warm-start checkpoint into model_dir.

    `spec`: a JobSpec, a dict, a JSON/YAML string or a file path/URL; `overrides`: a list of
    "KEY=VALUE" strings or a {KEY: VALUE} dict, applied to the spec first (as in every step).
    Result: `records.ConvertResult`."""
    with open_job(spec, overrides, reads_data=False) as job:
        est = job.estimator
        return records.as_result(
            records.ConvertResult,
            {
                "model_dir": job.model_dir.url,
                **(
                    {}
                    if job.premade
                    else {"keras_checkpoint": storage.join(job.model_dir.url, data.KERAS_DIR)}
                ),
                "inputs": {k: list(s) for k, (s, _) in job.io.inputs.items()},
                "outputs": job.io.output_keys,
                "global_step": training.global_step(est),
                "warm_start": job.warm_start,
                "convert_seconds": round(job.convert_seconds, 3),
            },
        )


@contextlib.contextmanager
def _stopped_in(model_dir):
    """Training stopped on request: what is left goes up, and the message names the
    checkpoint where model_dir keeps it."""
    try:
        yield
    except stopping.Stopped as stopped:
        model_dir.sync()
        raise stopping.Stopped(stopped.step, model_dir.checkpoint_url(stopped.checkpoint)) from None


def _train(job: Job) -> dict:
    spec = job.spec
    est = job.estimator
    with job.data.errors("train"), _stopped_in(job.model_dir):
        if job.task is not None:
            result = training.train_in_cluster(
                est,
                job.data.input_fn("train"),
                job.data.input_fn("eval"),
                spec,
                job.task,
                spec.data.batch_size,
                job.model_dir.listeners(),
            )
        elif spec.train.early_stopping or spec.eval.every_steps != "end":
            result = training.train_and_evaluate(
                est,
                job.data.input_fn("train"),
                job.data.input_fn("eval"),
                spec,
                spec.data.batch_size,
                job.model_dir.listeners(),
            )
        else:
            result = training.train(
                est,
                job.data.input_fn("train"),
                spec,
                spec.data.batch_size,
                job.model_dir.listeners(),
            )
    job.model_dir.sync()
    if job.model_dir.remote:
        result["model_dir"] = job.model_dir.url
        result["checkpoint"] = job.model_dir.checkpoint_url(result["checkpoint"])
    if job.model_dir.resume is not None:
        result["resume_download_bytes"] = job.model_dir.resume["bytes"]
    uploads = job.model_dir.uploads
    if uploads is not None:
        result["checkpoint_uploads"] = {
            "uploaded": uploads.uploaded,
            "not_uploaded": len(uploads.skipped),
        }
    streamed = job.data.source("train").stream
    if streamed is not None:
        result["streamed"] = streamed.stats()
    return result


def train_step(spec, overrides=None) -> dict:
    """Trains to train.steps total steps; a rerun resumes from the last checkpoint. In a
    cluster (TF_CONFIG) it runs this process's task. Result: `records.TrainResult`."""
    with open_job(spec, overrides, in_cluster=True) as job:
        job.check_data()
        _check_baseline(job)
        trained = _train(job)
        if job.spec.baseline is not None and job.leads:
            trained["premade_baseline"] = _train_baseline(job)
        return _task_result(job, trained)


def _task_result(job: Job, result: dict) -> dict:
    task = {} if job.task is None else {"task": job.task.name}
    return records.as_result(records.TrainResult, {**task, **result})


def evaluate_step(spec, overrides=None, read_only=False) -> dict:
    """Evaluates the latest checkpoint on the eval files; classifiers also get a confusion
    matrix. With an export section the gate decides too (`gate` in the result). `read_only`:
    leave model_dir untouched (no eval summaries written there).
    Result: `records.EvaluateResult`."""
    with open_job(spec, overrides, "read" if read_only else "train") as job:
        job.check_data()
        _check_baseline(job, trained=True)
        est = job.estimator
        with job.data.errors("eval"):
            result = training.evaluate(est, job.data.input_fn("eval"), job.spec)
        job.model_dir.sync()
        confusion = confusion_matrix(job)
        if confusion:
            result["confusion_matrix"] = confusion
        if job.spec.baseline is not None:
            result["premade_baseline"] = _measure_baseline(job)
        if job.spec.export is not None:
            result["gate"] = _decide(job, result["metrics"], result.get("premade_baseline"))
        if job.model_dir.remote:
            result["checkpoint"] = job.model_dir.checkpoint_url(result["checkpoint"])
        return records.as_result(
            records.EvaluateResult,
            {
                **result,
                "global_step": result["metrics"].get("global_step"),
                "model_dir": storage.redact(job.model_dir.url),
            },
        )


def confusion_matrix(job: Job) -> dict | None:
    """A classifier's confusion matrix on the eval data at the latest checkpoint; None for
    other models (and pre-made ones)."""
    if job.model is None:
        return None
    classes = training.classes_of(job.model)
    if not classes:
        return None
    trained = conversion.keras_model_at(
        job.model, job.estimator.latest_checkpoint(), job.spec.model.checkpoint_format
    )
    return training.confusion_matrix(
        trained,
        job.data.input_fn("eval")(),
        classes,
        weighted_features=data.for_source(job.data.plan, job.data.source("eval")).sample_weight,
        steps=job.spec.eval.steps,
        names=next(iter(job.data.class_names().values()), None),
    )


# --------------------------------------------------------------------------- baseline


class Baseline:
    """The job's pre-made baseline in model_dir/baseline: its design (decided from the
    training data by the train step, read back by later steps) and its Estimator."""

    def __init__(self, job: Job, train: bool = False):
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
        if self.design is None:  # _check_baseline said so before any work
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


def _train_baseline(job: Job) -> dict:
    """Trains the pre-made baseline to baseline.steps (default train.steps) on the training
    data; a rerun resumes. A baseline that fails to train fails the step."""
    spec = job.spec
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


def _measure_baseline(job: Job, trained: dict | None = None) -> dict:
    """The pre-made baseline's metrics on the job's eval data, at its latest checkpoint."""
    baseline = Baseline(job)
    label = f"pre-made baseline {baseline.name}"
    with contextlib.closing(baseline.model_dir):
        with job.data.errors("eval"):
            metrics = training.evaluate(
                baseline.estimator, job.data.input_fn("eval", baseline.example), job.spec, label
            )["metrics"]
        baseline.model_dir.sync()
    return baseline.record(**(trained or {}), metrics=metrics)


# --------------------------------------------------------------------------- gate


def _decide(job: Job, metrics=None, premade_baseline=None) -> dict:
    """The gate's decision for this run's candidate, made once and kept in the registry: a
    retried run (same run id, same checkpoint) gets the same decision. `premade_baseline`:
    the job's pre-made baseline as measured (else measured here, when the job has one)."""
    spec = job.spec
    base = spec.path(spec.export.base)
    est = job.estimator
    run_id = job.run_id()
    checkpoint = os.path.basename(est.latest_checkpoint())
    earlier = registry.decision_for(base, run_id)
    same = earlier and (earlier.get("checkpoint"), earlier.get("force")) == (
        checkpoint,
        spec.gate.force,
    )
    if same:
        log.info(
            "gate: run %s was decided before: %s (%s)",
            run_id,
            "blessed" if earlier["blessed"] else "not blessed",
            earlier["reason"],
        )
        return earlier
    if metrics is None:  # export without the evaluate step: measure only what the gate needs
        with job.data.errors("eval"):
            metrics = (
                training.evaluate(est, job.data.input_fn("eval"), spec)["metrics"]
                if spec.gate.metrics
                else {}
            )
    baseline = None
    if gate.compares_with_baseline(spec.gate):
        gate.check_metric_names(spec.gate, metrics)
        found = registry.latest_blessed(base, exclude_run=run_id)
        if found is not None:
            try:
                baseline = {"version": found["version"], "metrics": _evaluate_version(job, found)}
            except SpecError as err:
                baseline = {"version": found["version"], "error": err.problem}
    if spec.baseline is not None and premade_baseline is None:
        premade_baseline = _measure_baseline(job)
    decision = records.GateDecision(
        **gate.judge(spec.gate, metrics, baseline, premade_baseline),
        **({"premade_baseline": premade_baseline} if premade_baseline else {}),
        run_id=run_id,
        checkpoint=checkpoint,
        global_step=training.global_step(est),
        metrics=metrics,
        eval_data=_eval_data(job),
        force=spec.gate.force,
        decided_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    ).dump()
    registry.save_decision(base, run_id, decision)
    log.info(
        "gate: %s: %s", "blessed" if decision["blessed"] else "not blessed", decision["reason"]
    )
    return decision


def _evaluate_version(job: Job, record: dict) -> dict:
    """A published version's metrics on this run's eval data, the way the candidate's are
    measured: its variables in this model, converted, evaluated by the Estimator."""
    prefix = warm_start.version_checkpoint(record["url"], os.path.join(job.staging_dir, "baseline"))
    label = f"baseline version {record['version']} on this run's eval data"
    if job.premade is not None:
        metrics = _evaluate_premade_version(job, prefix, record["version"], label)
    else:
        metrics = _evaluate_keras_version(job, prefix, record["version"], label)
    metrics = {k: v for k, v in metrics.items() if k != "global_step"}
    if job.model_dir.writable and job.leads:  # beside the candidate's evaluation in TensorBoard
        step = training.global_step(job.estimator)
        summaries.write_scalars(os.path.join(job.model_dir.path, "eval_baseline"), step, metrics)
        job.model_dir.sync()
    return metrics


def _evaluate_keras_version(job: Job, prefix: str, version: int, label: str) -> dict:
    own = job.model.get_weights()
    try:
        warm_start.apply(job.model, prefix, {"url": f"version {version}"}, field="gate.baseline")
        estimator = conversion.convert(
            keras_model=job.model,
            custom_objects=job.custom_objects,
            config=training.run_config(job.spec, os.path.join(job.staging_dir, "baseline_dir")),
            checkpoint_format=job.spec.model.checkpoint_format,
            metric_names_map=job.spec.model.metric_names_map,
            export_outputs=job.export_outputs,
        )
    finally:
        job.model.set_weights(own)
    return training.evaluate(estimator, job.data.input_fn("eval"), job.spec, label)["metrics"]


def _evaluate_premade_version(job: Job, prefix: str, version: int, label: str) -> dict:
    """The version's variables (its SavedModel's) restored into this job's pre-made
    Estimator, evaluated in a directory of its own."""
    config = training.run_config(job.spec, os.path.join(job.staging_dir, "baseline_dir"))
    estimator = premade.estimator(job.design, job.premade, config)
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


def _eval_data(job: Job) -> dict:
    """What the metrics were measured on: the eval files and a digest of their contents."""
    files = (job.spec.data.eval or job.spec.data.train).files
    source = job.data.source("eval")
    return {
        "files": [storage.redact(job.spec.path(f)) for f in files],
        "file_count": len(source.files),
        "sha256": data.fingerprint(source),
    }


def _export(job: Job, metrics=None, copy_to=None, premade_baseline=None) -> dict:
    spec = job.spec
    if spec.export is None:
        raise SpecError("export", "no export section", "add export.base (where versions go)")
    est = job.estimator
    decision = _decide(job, metrics, premade_baseline)
    sample = _sample_features(job)
    if job.premade is not None:
        local, report = premade.export_verified(
            est, job.io, job.data.plan, job.design, spec.export, sample and sample[0]
        )
    else:
        local, report = export.export_verified(
            est,
            job.model,
            job.io,
            spec.export,
            job.export_outputs,
            sample,
            spec.model.checkpoint_format,
            job.data.plan,
        )
    source = {
        "model_dir": storage.redact(job.model_dir.url),
        "checkpoint": os.path.basename(est.latest_checkpoint()),
        "global_step": training.global_step(est),
        "warm_start": job.warm_start,
        "data": job.data.plan.record(),
    }
    base = spec.path(spec.export.base)
    metrics = decision["metrics"]
    record = registry.new_record(decision, source)
    try:
        if copy_to:  # e.g. a KFP Model artifact: the same verified SavedModel
            shutil.copytree(local, copy_to, dirs_exist_ok=True)
        keep = publish.publish if decision["blessed"] else publish.keep_candidate
        published = keep(
            local, base, decision["run_id"], metrics=metrics, source=source, record=record
        )
    finally:
        export.cleanup(local)
    pruned = registry.prune(base, spec.export.keep) if spec.export.keep else []
    if not decision["blessed"]:
        published["candidate_path"] = published.pop("export_path")
    return records.as_result(
        records.ExportResult,
        {
            **published,
            **report,
            "model_dir": source["model_dir"],
            "export_base": storage.redact(base),
            "metrics": metrics,
            "run_id": decision["run_id"],
            "global_step": source["global_step"],
            "blessed": decision["blessed"],
            "reason": decision["reason"],
            "gate": decision,
            "pruned": pruned,
        },
    )


def export_step(spec, overrides=None, metrics=None, read_only=False, copy_to=None) -> dict:
    """Exports the latest checkpoint as a verified SavedModel; the gate decides whether it
    becomes the next version or a kept candidate. `metrics`: the evaluate step's (not
    measured again); `read_only`: as in evaluate_step; `copy_to`: a local directory that
    also receives the SavedModel. Result: `records.ExportResult`."""
    check_metrics(metrics)
    with open_job(spec, overrides, "read" if read_only else "train") as job:
        job.check_data()
        _check_baseline(job, trained=True)
        return _export(job, metrics, copy_to)


def check_metrics(metrics, field: str = "metrics") -> None:
    """Metrics given to export (the evaluate step's): {name: number or null}."""
    if metrics is None:
        return
    bad = (
        not isinstance(metrics, dict)
        or not metrics
        or any(
            not isinstance(k, str)
            or isinstance(v, bool)
            or not (v is None or (isinstance(v, (int, float)) and math.isfinite(v)))
            for k, v in metrics.items()
        )
    )
    if bad:
        shown = json.dumps(metrics, default=str)
        raise SpecError(
            field,
            f"expected a JSON object of metric name -> finite number, got {shown[:80]}",
            'pass e.g. {"accuracy": 0.93, "loss": 0.21}, or leave it '
            "out to measure them on the eval data",
        )


def run(spec, overrides=None, copy_to=None) -> dict:
    """convert -> train -> evaluate -> export, in one process. `copy_to`: as in export_step.
    Result: `records.RunResult`."""
    began = time.perf_counter()
    with open_job(spec, overrides, in_cluster=True) as job:
        if job.spec.export is None:
            raise SpecError("export", "no export section", "add export.base (where versions go)")
        job.check_data()
        _check_baseline(job)
        _check_gate_metrics(job)
        trained = _train(job)
        if not job.leads:
            return _task_result(job, trained)  # the chief evaluates, exports and publishes
        premade_baseline = None
        if job.spec.baseline is not None:
            trained["premade_baseline"] = _train_baseline(job)
            premade_baseline = _measure_baseline(job, trained["premade_baseline"])
        if (trained.get("metrics") or {}).get("global_step") == trained["global_step"]:
            evaluated = {"metrics": trained["metrics"]}  # training's last evaluation
        else:
            with job.data.errors("eval"):
                evaluated = training.evaluate(job.estimator, job.data.input_fn("eval"), job.spec)
        job.model_dir.sync()
        exported = _export(job, evaluated["metrics"], copy_to, premade_baseline)
        return records.as_result(
            records.RunResult,
            {
                "export_path": exported.get("export_path"),
                "candidate_path": exported.get("candidate_path"),
                "export_base": exported["export_base"],
                "version": exported["version"],
                "blessed": exported["blessed"],
                "reason": exported["reason"],
                "gate": exported["gate"],
                "pruned": exported["pruned"],
                "manifest": exported["manifest"],
                "metrics": evaluated["metrics"],
                "global_step": trained["global_step"],
                "model_dir": trained["model_dir"],
                "run_id": exported["run_id"],
                **({"task": job.task.name} if job.task else {}),
                "warm_start": job.warm_start,
                "reused": exported["reused"],
                "signatures": exported["signatures"],
                "train": trained,
                **({"premade_baseline": premade_baseline} if premade_baseline else {}),
                "convert_seconds": round(job.convert_seconds, 3),
                "total_seconds": round(time.perf_counter() - began, 3),
            },
        )


def validate(spec, overrides=None) -> dict:
    """Checks the spec, the files, and model/data compatibility without training; writes
    nothing and fetches no warm-start source. Result: `records.ValidateResult`."""
    with open_job(spec, overrides, "inspect") as job:
        plan = job.check_data()
        _check_baseline(job)
        _check_gate_metrics(job)
        warm_start.locate(job.spec)
        if job.spec.export and job.spec.export.serving_input == "tf_example":
            signatures.feature_spec(job.io, plan)
        return records.as_result(
            records.ValidateResult,
            {
                "valid": True,
                "inputs": {k: list(s) for k, (s, _) in job.io.inputs.items()},
                "outputs": job.io.output_keys,
                "features": plan.features,
                "labels": plan.labels,
                "train_files": len(job.data.source("train").files),
                "eval_files": len(job.data.source("eval").files),
                "column_types": plan.types,
                "checked": {
                    scan.field: {
                        "rows": scan.rows,
                        "complete": scan.complete,
                        "dropped": scan.dropped,
                    }
                    for scan in job.data.scans
                },
                **plan.record(),
            },
        )


STEPS = {
    "run": run,
    "convert": convert_step,
    "train": train_step,
    "evaluate": evaluate_step,
    "export": export_step,
    "validate": validate,
}
