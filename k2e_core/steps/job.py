"""Job steps: each takes a job spec (object, dict or path) and returns a JSON-serialisable dict.

    convert_step -> train_step -> evaluate_step -> export_step      (or run: all four)

Steps are independent: each may run in its own process (an Airflow task, a KFP component)
and finds what earlier steps left in `model_dir`. A step opens its job (`open_job`) in
named steps, in this order:

1. the spec, and the cluster task TF_CONFIG names, if any;
2. preflight: every location the job writes can be written;
3. model_dir: where TensorFlow reads and writes it (`ModelDir`);
4. the trainer the spec names (`trainer.for_spec`: estimator or keras), which builds or
   loads the Keras model;
5. the warm start: its weights put into the model, before the trainer writes model_dir's
   first checkpoint (`Trainer.warm_start`).

The job reaches its data through one object, `Job.data` (`access.DataAccess`: files, the
plan, input functions), and everything TensorFlow does through `Job.trainer`
(`k2e_core.trainer.Trainer`); the plan and the trainer's model_dir are made ready once, on
first use (`Job.prepare` builds the plan first in a step that reads data).
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

from k2e_core import records, registry, signatures, stopping, storage
from k2e_core import trainer as trainers
from k2e_core.distributed import cluster
from k2e_core.errors import K2eError, SpecError
from k2e_core.inputs import access, data, pipeline
from k2e_core.registry import gate
from k2e_core.spec import JobSpec, load_spec
from k2e_core.steps.model_dir import Access, ModelDir
from k2e_core.storage import publish

log = logging.getLogger("k2e.job")


class Job:
    """An opened job: its spec, model_dir, trainer and Keras model (None for a pre-made
    model); the data plan built once on first use."""

    def __init__(
        self,
        spec: JobSpec,
        staging_dir: str,
        model_dir: ModelDir,
        model,
        custom_objects: dict,
        seed,
        trainer_class: type[trainers.Trainer],
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
        self.reads_data = reads_data
        self.convert_seconds = None
        self.trainer = trainer_class(self)
        self.data = access.DataAccess(
            spec.data,
            spec.path,
            staging_dir,
            model_dir.path,
            io=lambda: self.io,
            check_labels=None if model is None else self._check_labels,
            seed=spec.run_config.tf_random_seed,
            share=task.data_share if task else None,
            examples=self.trainer.examples,
        )

    @property
    def leads(self) -> bool:
        """Whether this process writes model_dir's records (a single process or the chief)."""
        return cluster.leads(self.task)

    @functools.cached_property
    def io(self) -> data.ModelIO:
        """The model's inputs and outputs (a pre-made model's: from the data spec and the
        training files' columns)."""
        return self.trainer.model_io()

    def _check_labels(self, plan: data.Plan, source: data.Source) -> None:
        pipeline.check_labels_fit(self.trainer.run_loss(), plan, source, self.spec.data)

    def prepare(self) -> None:
        """model_dir made ready to train by the trainer, once (its first checkpoint, the
        warm start). In a step that reads data the plan is built first."""
        if self.convert_seconds is None:
            self.convert_seconds = self.trainer.prepare()

    def run_id(self) -> str:
        """The spec's run id, or one derived from the checkpoint being exported."""
        if self.spec.run_id:
            return self.spec.run_id
        ckpt = os.path.basename(self.trainer.latest_checkpoint() or "none")
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
    trainer_class = trainers.for_spec(spec)
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
                model, objects = trainer_class.load_model(spec, staging)
                if access == "inspect" or not cluster.leads(task) or model is None:
                    seed = trainers.Seed()
                else:
                    seed = trainer_class.warm_start(model, model_dir.path, spec, staging)
                yield Job(
                    spec, staging, model_dir, model, objects, seed, trainer_class, task, reads_data
                )
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
    reported = job.trainer.metric_names()
    gate.check_metric_names(spec.gate, dict.fromkeys([*reported, "global_step"], 0.0))
    if spec.baseline is not None:
        known = job.trainer.baseline_metric_names()
        for name, rule in spec.gate.metrics.items():
            wanted = rule.vs_baseline and (rule.vs_baseline.metric or name)
            if wanted and wanted not in known:
                raise SpecError(
                    f"gate.metrics.{name}.vs_baseline",
                    f"the pre-made baseline reports no {wanted!r}",
                    f"set vs_baseline.metric to one of {known}",
                )


def _check_baseline(job: Job, trained: bool = False) -> None:
    """Before any work: the pre-made baseline fits the model; with `trained`, model_dir
    holds it (the train step trains it)."""
    if job.spec.baseline is not None:
        job.trainer.check_baseline(trained)


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
        job.prepare()
        return records.as_result(
            records.ConvertResult,
            {
                "model_dir": job.model_dir.url,
                **job.trainer.convert_result(),
                "inputs": {k: list(s) for k, (s, _) in job.io.inputs.items()},
                "outputs": job.io.output_keys,
                "global_step": job.trainer.global_step(),
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
    job.prepare()
    with job.data.errors("train"), _stopped_in(job.model_dir):
        result = job.trainer.train()
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
            trained["premade_baseline"] = job.trainer.train_baseline()
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
        job.prepare()
        with job.data.errors("eval"):
            result = job.trainer.evaluate()
        job.model_dir.sync()
        confusion = job.trainer.confusion_matrix()
        if confusion:
            result["confusion_matrix"] = confusion
        if job.spec.baseline is not None:
            result["premade_baseline"] = job.trainer.measure_baseline()
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


# --------------------------------------------------------------------------- gate


def _decide(job: Job, metrics=None, premade_baseline=None) -> dict:
    """The gate's decision for this run's candidate, made once and kept in the registry: a
    retried run (same run id, same checkpoint) gets the same decision. `premade_baseline`:
    the job's pre-made baseline as measured (else measured here, when the job has one)."""
    spec = job.spec
    base = spec.path(spec.export.base)
    job.prepare()
    run_id = job.run_id()
    checkpoint = os.path.basename(job.trainer.latest_checkpoint())
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
            metrics = job.trainer.evaluate()["metrics"] if spec.gate.metrics else {}
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
        premade_baseline = job.trainer.measure_baseline()
    decision = records.GateDecision(
        **gate.judge(spec.gate, metrics, baseline, premade_baseline),
        **({"premade_baseline": premade_baseline} if premade_baseline else {}),
        run_id=run_id,
        checkpoint=checkpoint,
        global_step=job.trainer.global_step(),
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
    measured (by this job's trainer)."""
    label = f"baseline version {record['version']} on this run's eval data"
    return job.trainer.evaluate_version(record["url"], record["version"], label)


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
    decision = _decide(job, metrics, premade_baseline)
    local, report = job.trainer.export_verified(_sample_features(job))
    source = {
        "model_dir": storage.redact(job.model_dir.url),
        "checkpoint": os.path.basename(job.trainer.latest_checkpoint()),
        "global_step": job.trainer.global_step(),
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
        shutil.rmtree(os.path.dirname(local.rstrip("/")), ignore_errors=True)
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
            trained["premade_baseline"] = job.trainer.train_baseline()
            premade_baseline = job.trainer.measure_baseline(trained["premade_baseline"])
        if (trained.get("metrics") or {}).get("global_step") == trained["global_step"]:
            evaluated = {"metrics": trained["metrics"]}  # training's last evaluation
        else:
            with job.data.errors("eval"):
                evaluated = job.trainer.evaluate()
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
        job.trainer.locate_warm_start()
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
