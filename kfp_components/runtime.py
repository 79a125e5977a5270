"""What k2e's components run inside the project image: the core's steps over KFP artifacts.

The component functions (kfp_components.components) only forward their arguments here.
Every `model_dir` is the `path` of a KFP artifact, which KFP syncs with the artifact's URI.
Any failure ends the component with one line (for bad input: the field and the fix) and
the CLI's exit code (k2e_core.errors.describe): KFP marks the task failed, with no
traceback unless K2E_DEBUG is set.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile


def overrides(
    spec_overrides: str = "",
    train_files: str = "",
    eval_files: str = "",
    train_steps: int = 0,
    run_id: str = "",
    **fields,
) -> dict:
    """The JSON overrides plus the pipeline's plain parameters that are set (not ""/0);
    `run_id` (the KFP run's id) unless the overrides name one."""
    from k2e_core.errors import SpecError

    try:
        merged = json.loads(spec_overrides) if spec_overrides.strip() else {}
    except json.JSONDecodeError as err:
        raise SpecError(
            "overrides", f"is not JSON ({err})", 'pass {"train.steps": 200, ...}'
        ) from None
    if not isinstance(merged, dict):
        raise SpecError("overrides", "is not a JSON object", 'pass {"train.steps": 200, ...}')
    for key, value in {
        "data.train.files": train_files,
        "data.eval.files": eval_files,
        "train.steps": train_steps,
        **fields,
    }.items():
        if value not in ("", 0, None):
            merged[key] = value
    if run_id and "run_id" not in merged:
        merged["run_id"] = run_id
    return merged


def step(
    name: str,
    spec: str,
    spec_overrides: str,
    fields: dict,
    fixed: dict | None = None,
    report=None,
    **kwargs,
) -> dict:
    """Runs a core step with k2e's logs on stderr; any k2e error, bad overrides included,
    ends as one clear line. `fixed`: overrides applied as they are, None values included.
    `report`: an HTML artifact the job's `k2e report` is written to after the step."""

    def run_step(merged):
        from k2e_core.steps import job

        result = job.STEPS[name](spec, merged, **kwargs)
        if report is not None:
            from k2e_core.steps.report import report_step

            written = report_step(spec, report.path, merged)
            report.metadata.update({"pictures": written["pictures"]})
        return result

    return _reported(name, run_step, spec_overrides, fields, fixed)


def _reported(
    name: str, call, spec_overrides: str, fields: dict, fixed: dict | None = None
) -> dict:
    """`call(merged overrides)` with k2e's logs on stderr and any k2e error as one line."""
    from k2e_core.errors import describe
    from k2e_core.logs import configure_cli_logging

    configure_cli_logging()
    try:
        result = call({**overrides(spec_overrides, **fields), **(fixed or {})})
    except Exception as err:  # one line, the CLI's exit code; a traceback only with K2E_DEBUG
        failure = describe(err)
        if os.environ.get("K2E_DEBUG"):
            import traceback

            traceback.print_exc()
        print(f"k2e {name}: {failure.line}", file=sys.stderr, flush=True)
        raise SystemExit(failure.exit_code) from None
    from k2e_core.records import summary_line

    logging.getLogger("k2e").info("k2e %s: %s", name, summary_line(result))
    return result


def convert(
    *, spec: str, spec_overrides: str, warm_start: str, export_base: str, model_dir
) -> dict:
    result = step(
        "convert",
        spec,
        spec_overrides,
        {"model_dir": model_dir.path, "warm_start": warm_start, "export.base": export_base},
    )
    model_dir.metadata.update({"global_step": 0, "warm_start": result["warm_start"] or "none"})
    return result


def train(
    *,
    spec: str,
    spec_overrides: str,
    train_files: str,
    eval_files: str,
    train_steps: int,
    converted,
    checkpoints,
) -> dict:
    """Trains in a copy of the converted model_dir: an input artifact is never modified."""
    shutil.copytree(converted.path, checkpoints.path, dirs_exist_ok=True)
    result = step(
        "train",
        spec,
        spec_overrides,
        {
            "train_files": train_files,
            "eval_files": eval_files,
            "train_steps": train_steps,
            "model_dir": checkpoints.path,
        },
    )
    _describe_checkpoints(checkpoints, result)
    return result


def evaluate(
    *, spec: str, spec_overrides: str, eval_files: str, checkpoints, metrics, classification
) -> dict:
    """Metrics only: the gate decides in the export component, against its export base."""
    result = step(
        "evaluate",
        spec,
        spec_overrides,
        {"eval_files": eval_files, "model_dir": checkpoints.path},
        fixed={"export": None},
        read_only=True,
    )
    _log_metrics(metrics, result)
    if "confusion_matrix" in result:
        matrix = result["confusion_matrix"]
        classification.log_confusion_matrix(matrix["categories"], matrix["matrix"])
    return result


def export(
    *,
    spec: str,
    spec_overrides: str,
    eval_files: str,
    export_base: str,
    metrics_json: str,
    run_id: str,
    checkpoints,
    model,
    report,
) -> dict:
    """Writes the verified SavedModel into `model`; the gate decides whether it becomes the
    next version under `export_base` or a kept candidate there. Without `export_base`, the
    registry is a scratch one, removed afterwards: the gate has thresholds only. `report`:
    the job's report page."""
    with _registry(export_base) as base:
        result = step(
            "export",
            spec,
            spec_overrides,
            {
                "eval_files": eval_files,
                "model_dir": checkpoints.path,
                "export.base": base,
                "run_id": run_id,
            },
            report=report,
            metrics=json.loads(metrics_json) if metrics_json else None,
            read_only=True,
            copy_to=model.path,
        )
    _describe_model(model, result, spec, export_base)
    return result


def run_job(
    *,
    spec: str,
    spec_overrides: str,
    train_files: str,
    eval_files: str,
    train_steps: int,
    warm_start: str,
    export_base: str,
    run_id: str,
    checkpoints,
    metrics,
    model,
    report,
) -> dict:
    """The whole job in one process (TensorFlow is imported once): `checkpoints` is its
    model_dir, `metrics` the evaluation, `model` the verified SavedModel, `report` the
    job's report page; the gate publishes it under `export_base` as in `export`."""
    with _registry(export_base) as base:
        result = step(
            "run",
            spec,
            spec_overrides,
            {
                "train_files": train_files,
                "eval_files": eval_files,
                "train_steps": train_steps,
                "model_dir": checkpoints.path,
                "warm_start": warm_start,
                "export.base": base,
                "run_id": run_id,
            },
            report=report,
            copy_to=model.path,
        )
    _describe_checkpoints(checkpoints, result["train"])
    _log_metrics(metrics, result)
    _describe_model(model, result, spec, export_base)
    return result


def run_tfjob(
    *,
    spec: str,
    spec_overrides: str,
    train_files: str,
    eval_files: str,
    train_steps: int,
    export_base: str,
    run_id: str,
    metrics,
) -> dict:
    """The job as the spec's Kubeflow TFJob (its `cluster` section), named after the KFP run:
    submitted from this pod, awaited; returns what its chief published. No TensorFlow here."""

    def submit(merged):
        from k2e_core.distributed import tfjob
        from k2e_core.spec import load_spec

        return tfjob.run(load_spec(spec, merged), tfjob.name_for(run_id) if run_id else None)

    result = _reported(
        "tfjob",
        submit,
        spec_overrides,
        {
            "train_files": train_files,
            "eval_files": eval_files,
            "train_steps": train_steps,
            "export.base": export_base,
        },
    )
    _log_metrics(metrics, result)
    return result


def published_outputs(result: dict, export_base: str) -> tuple:
    """(export_path, version, blessed, reason): what the export and run_job components return."""
    published = bool(result["blessed"] and export_base)
    return (
        result["export_path"] if published else "",
        int(result["version"] or 0),
        bool(result["blessed"]),
        str(result["reason"]),
    )


@contextlib.contextmanager
def _registry(export_base: str):
    """`export_base`, or a scratch registry removed afterwards (the gate has thresholds only)."""
    if export_base:
        yield export_base
        return
    scratch = tempfile.mkdtemp(prefix="k2e-export-")
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _describe_checkpoints(checkpoints, trained: dict) -> None:
    checkpoints.metadata.update(
        {
            "global_step": trained["global_step"],
            "checkpoint": trained["checkpoint"].rsplit("/", 1)[-1],
        }
    )


def _log_metrics(metrics, result: dict) -> None:
    """The candidate's metrics, and the pre-made baseline's as baseline_<name>."""
    premade = (result.get("premade_baseline") or {}).get("metrics") or {}
    values = {**result["metrics"], **{f"baseline_{k}": v for k, v in premade.items()}}
    for name, value in values.items():
        if isinstance(value, (int, float)):
            metrics.log_metric(name, float(value))


def _describe_model(model, result: dict, spec: str, export_base: str) -> None:
    from k2e_core.versions import installed

    published = bool(result["blessed"] and export_base)
    model.metadata.update(
        {
            "framework": "tensorflow",
            "framework_version": installed("tensorflow"),
            "format": "SavedModel",
            "signatures": result["signatures"],
            "version": result["version"] or 0,
            "global_step": result["global_step"],
            "blessed": result["blessed"],
            "reason": result["reason"],
            "spec": "inline" if spec.lstrip().startswith("{") else spec,
            "published_to": result["export_path"] if published else "",
            "candidate": result.get("candidate_path") or "" if export_base else "",
        }
    )
