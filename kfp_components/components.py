"""KFP v2 components for the steps of a k2e job. Each forwards to kfp_components.runtime in
the project image (Dockerfile at the repository root); compiling imports no TensorFlow.

Parameters are plain strings and numbers, so the same values work from the KFP UI and from
Python: `spec` is the job spec's URL (or inline JSON), `overrides` a JSON object of spec
fields, and "" or 0 leaves the spec's own value.
"""

import os
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Input, Metrics, Model, Output

#: The project image; build it with `docker build -t k2e:0.1.0 .` and push it where the
#: cluster pulls from, then compile with K2E_IMAGE=<registry>/k2e:0.1.0.
IMAGE = os.environ.get("K2E_IMAGE", "k2e:0.1.0")

component = dsl.component(base_image=IMAGE, install_kfp_package=False)


@component
def convert(
    spec: str,
    model_dir: Output[Artifact],
    overrides: str = "{}",
    warm_start: str = "",
    export_base: str = "",
) -> NamedTuple("Outputs", [("warm_start", str)]):
    """Keras model -> Estimator: the model_dir artifact with its warm-start checkpoint.
    `warm_start`: "latest" (the latest blessed version under `export_base`, else the spec's
    export.base), a version number, a checkpoint or checkpoints artifact URI, or "" for the
    model's own weights."""
    from kfp_components import runtime

    result = runtime.convert(
        spec=spec,
        spec_overrides=overrides,
        warm_start=warm_start,
        export_base=export_base,
        model_dir=model_dir,
    )
    return (str((result["warm_start"] or {}).get("url", "")),)


@component
def train(
    spec: str,
    converted: Input[Artifact],
    checkpoints: Output[Artifact],
    overrides: str = "{}",
    train_files: str = "",
    eval_files: str = "",
    train_steps: int = 0,
) -> NamedTuple("Outputs", [("global_step", int)]):
    """Trains to train.steps; `checkpoints` is the training run's model_dir."""
    from kfp_components import runtime

    result = runtime.train(
        spec=spec,
        spec_overrides=overrides,
        train_files=train_files,
        eval_files=eval_files,
        train_steps=train_steps,
        converted=converted,
        checkpoints=checkpoints,
    )
    return (int(result["global_step"]),)


@component
def evaluate(
    spec: str,
    checkpoints: Input[Artifact],
    metrics: Output[Metrics],
    classification: Output[ClassificationMetrics],
    overrides: str = "{}",
    eval_files: str = "",
) -> NamedTuple("Outputs", [("metrics_json", str)]):
    """Evaluates the latest checkpoint: scalar metrics, and a confusion matrix for classifiers."""
    import json

    from kfp_components import runtime

    result = runtime.evaluate(
        spec=spec,
        spec_overrides=overrides,
        eval_files=eval_files,
        checkpoints=checkpoints,
        metrics=metrics,
        classification=classification,
    )
    return (json.dumps(result["metrics"]),)


@component
def export(
    spec: str,
    checkpoints: Input[Artifact],
    model: Output[Model],
    report: Output[HTML],
    overrides: str = "{}",
    eval_files: str = "",
    export_base: str = "",
    metrics_json: str = "",
    run_id: str = "",
) -> NamedTuple(
    "Outputs", [("export_path", str), ("version", int), ("blessed", bool), ("reason", str)]
):
    """Exports a verified SavedModel into `model`; the spec's gate decides whether it is
    published under `export_base` (an fsspec URL) as the next version (`export_path`,
    `version`) or kept there as a candidate (`blessed` False, `reason` says why). `run_id`:
    the pipeline run's id, so a retried task gets the same decision and version. `report`:
    the `k2e report` page (curves, metrics, confusion matrix, gate, registry)."""
    from kfp_components import runtime

    result = runtime.export(
        spec=spec,
        spec_overrides=overrides,
        eval_files=eval_files,
        export_base=export_base,
        metrics_json=metrics_json,
        run_id=run_id,
        checkpoints=checkpoints,
        model=model,
        report=report,
    )
    return runtime.published_outputs(result, export_base)


@component
def run_job(
    spec: str,
    checkpoints: Output[Artifact],
    metrics: Output[Metrics],
    model: Output[Model],
    report: Output[HTML],
    overrides: str = "{}",
    train_files: str = "",
    eval_files: str = "",
    train_steps: int = 0,
    warm_start: str = "",
    export_base: str = "",
    run_id: str = "",
) -> NamedTuple(
    "Outputs", [("export_path", str), ("version", int), ("blessed", bool), ("reason", str)]
):
    """The whole job (convert, train, evaluate, export) in one container: the cheapest way
    to run a job that needs no step of its own. Outputs, the gate and `report` as in
    `export`."""
    from kfp_components import runtime

    result = runtime.run_job(
        spec=spec,
        spec_overrides=overrides,
        train_files=train_files,
        eval_files=eval_files,
        train_steps=train_steps,
        warm_start=warm_start,
        export_base=export_base,
        run_id=run_id,
        checkpoints=checkpoints,
        metrics=metrics,
        model=model,
        report=report,
    )
    return runtime.published_outputs(result, export_base)


@component
def run_tfjob(
    spec: str,
    metrics: Output[Metrics],
    overrides: str = "{}",
    train_files: str = "",
    eval_files: str = "",
    train_steps: int = 0,
    export_base: str = "",
    run_id: str = "",
) -> NamedTuple(
    "Outputs", [("export_path", str), ("version", int), ("blessed", bool), ("reason", str)]
):
    """The job as the spec's Kubeflow TFJob (chief, workers, ps, evaluator from its `cluster`
    section): submitted from this step, which waits for it and returns what the chief
    published under the spec's (or `export_base`'s) registry. The step's service account
    needs to create and get kubeflow.org tfjobs; `run_id` names the TFJob, so a retried step
    re-attaches to it."""
    from kfp_components import runtime

    result = runtime.run_tfjob(
        spec=spec,
        spec_overrides=overrides,
        train_files=train_files,
        eval_files=eval_files,
        train_steps=train_steps,
        export_base=export_base,
        run_id=run_id,
        metrics=metrics,
    )
    return runtime.published_outputs(result, result["export_base"])
