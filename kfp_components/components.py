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
from kfp.dsl.types.type_annotations import is_artifact_wrapped_in_Output

#: The project image, built from the Dockerfile. The default names a registry that does not
#: exist (so a cluster never pulls someone else's `k2e` from Docker Hub): push the image where
#: the cluster pulls from and compile with K2E_IMAGE=<registry>/<path>/k2e:<tag>.
PLACEHOLDER_IMAGE = "registry.example.com/k2e:0.1.0"
IMAGE = os.environ.get("K2E_IMAGE", PLACEHOLDER_IMAGE)

component = dsl.component(base_image=IMAGE, install_kfp_package=False)

#: What the KFP UI shows beside each input and output of the components and pipelines.
DESCRIPTIONS = {
    "spec": "The job spec: its URL (reachable from the pods) or inline JSON.",
    "overrides": 'JSON object of further spec fields, e.g. {"data.batch_size": 64}.',
    "train_files": 'Training data, a URL or glob; "" keeps the spec\'s.',
    "eval_files": 'Evaluation data, a URL or glob; "" keeps the spec\'s.',
    "train_steps": "Total training steps (a rerun resumes up to them); 0 keeps the spec's.",
    "warm_start": '"latest" (the newest blessed version), a version number, a checkpoint or '
    "an earlier run's checkpoints artifact URI; \"\" starts from the model's own weights.",
    "export_base": "The registry, an fsspec URL: a candidate the spec's gate blesses is "
    'published there as the next version, others are kept under candidates/; "" publishes '
    "nothing (the gate checks its thresholds, with no baseline).",
    "run_id": "The pipeline run's id: a retried task gets the same gate decision and version.",
    "converted": "The converted model_dir, with its warm-start checkpoint.",
    "metrics_json": "The evaluation's metrics, as the evaluate step returned them.",
    "model_dir": "The Estimator's model_dir with its warm-start checkpoint.",
    "checkpoints": "The training run's model_dir: checkpoints and TensorBoard event files.",
    "metrics": "The evaluation's scalar metrics; with a pre-made baseline in the spec, its "
    "metrics too, as baseline_<name>.",
    "classification": "The confusion matrix, for classifiers.",
    "model": "The verified SavedModel; its metadata holds `blessed` and the gate's `reason`.",
    "report": "The `k2e report` page: curves, metrics, confusion matrix, gate, registry.",
    "global_step": "The step training reached.",
    "export_path": 'Where the version was published; "" when it was not.',
    "version": "The published version's number (0: none).",
    "blessed": "Whether the gate blessed the candidate.",
    "reason": "The gate's reason for its decision.",
}


TFJOB_EXPORT_BASE = 'The registry the chief publishes to, an fsspec URL; "" keeps the spec\'s.'


def described(*outputs: str, returned: dict | None = None, **wording: str):
    """Gives the function's docstring an Args and a Returns section from DESCRIPTIONS
    (`wording` for inputs and `returned` for outputs where they differ), which KFP turns
    into the descriptions of its inputs and outputs: one wording for every component and
    pipeline. `outputs`: the output artifacts and values."""

    def describe(func):
        code = func.__code__
        parameters = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
        annotations = func.__annotations__
        inputs = [n for n in parameters if not is_artifact_wrapped_in_Output(annotations[n])]
        text = [func.__doc__.strip()]
        args = [f"    {n}: {wording.get(n, DESCRIPTIONS[n])}" for n in inputs]
        returns = [f"    {n}: {(returned or {}).get(n, DESCRIPTIONS[n])}" for n in outputs]
        for title, lines in (("Args", args), ("Returns", returns)):
            if lines:
                text.append(f"{title}:\n" + "\n".join(lines))
        func.__doc__ = "\n\n".join(text)
        return func

    return describe


@component
@described(
    "model_dir",
    "warm_start",
    returned={"warm_start": 'The warm start used: its URL, or "" for none.'},
)
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
@described("checkpoints", "global_step")
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
@described("metrics", "classification", "metrics_json")
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
@described("model", "report", "export_path", "version", "blessed", "reason")
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
@described(
    "checkpoints", "metrics", "model", "report", "export_path", "version", "blessed", "reason"
)
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
@described(
    "metrics",
    "export_path",
    "version",
    "blessed",
    "reason",
    export_base=TFJOB_EXPORT_BASE,
)
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
