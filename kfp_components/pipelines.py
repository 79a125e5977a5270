"""The k2e pipelines for one job spec: `training_pipeline` (convert -> train -> evaluate ->
export, one task each), `job_pipeline` (the same job as one task) and `tfjob_pipeline` (the
job as a distributed Kubeflow TFJob).

The gate's decision is made inside the export component (KFP's local runner has no
`dsl.If`): the Model artifact always holds the verified SavedModel, with `blessed` and
`reason` in its metadata; only a blessed one becomes a version under `export_base`.

`build(tasks)` makes the three with the cluster settings of a tasks file (CPU, memory,
accelerators, retries, timeouts, credentials: kfp_components.tasks); the module's
`training_pipeline`, `job_pipeline` and `tfjob_pipeline` have k2e's defaults.

No task is cached: each reads storage that changes between runs with the same parameters
(data at a URL, the registry's latest version, model_dir) or publishes. A run submitted
with `enable_caching=True` turns caching on for all of them.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Metrics, Model
from kfp.dsl.graph_component import GraphComponent

from kfp_components import components
from kfp_components.tasks import PipelineTasks


class TrainingOutputs(NamedTuple):
    model: Model
    checkpoints: Artifact
    metrics: Metrics
    classification: ClassificationMetrics
    report: HTML
    export_path: str
    blessed: bool


class TFJobOutputs(NamedTuple):
    metrics: Metrics
    export_path: str
    version: int
    blessed: bool


class JobOutputs(NamedTuple):
    model: Model
    checkpoints: Artifact
    metrics: Metrics
    report: HTML
    export_path: str
    blessed: bool


class Pipelines(NamedTuple):
    training: GraphComponent
    job: GraphComponent
    tfjob: GraphComponent


def build(tasks: PipelineTasks | None = None) -> Pipelines:
    """The three pipelines, each task configured by `tasks` (None: k2e's defaults)."""
    tasks = tasks or PipelineTasks()

    @dsl.pipeline(
        name="k2e-training",
        description="Converts a compiled Keras model to an Estimator, trains, evaluates and "
        "exports a verified SavedModel, optionally publishing it to an export base.",
    )
    @components.described(
        "model", "checkpoints", "metrics", "classification", "report", "export_path", "blessed"
    )
    def training_pipeline(
        spec: str,
        train_files: str = "",
        eval_files: str = "",
        train_steps: int = 0,
        export_base: str = "",
        warm_start: str = "",
        overrides: str = "{}",
    ) -> TrainingOutputs:
        """Convert, train, evaluate and export, one task each."""
        converted = components.convert(
            spec=spec, overrides=overrides, warm_start=warm_start, export_base=export_base
        )
        tasks.apply(converted, "convert")
        converted.set_display_name("convert")
        trained = components.train(
            spec=spec,
            converted=converted.outputs["model_dir"],
            overrides=overrides,
            train_files=train_files,
            eval_files=eval_files,
            train_steps=train_steps,
        )
        tasks.apply(trained, "train")
        evaluated = components.evaluate(
            spec=spec,
            checkpoints=trained.outputs["checkpoints"],
            overrides=overrides,
            eval_files=eval_files,
        )
        tasks.apply(evaluated, "evaluate")
        exported = components.export(
            spec=spec,
            checkpoints=trained.outputs["checkpoints"],
            overrides=overrides,
            eval_files=eval_files,
            export_base=export_base,
            metrics_json=evaluated.outputs["metrics_json"],
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        )
        tasks.apply(exported, "export")
        return TrainingOutputs(
            model=exported.outputs["model"],
            checkpoints=trained.outputs["checkpoints"],
            metrics=evaluated.outputs["metrics"],
            classification=evaluated.outputs["classification"],
            report=exported.outputs["report"],
            export_path=exported.outputs["export_path"],
            blessed=exported.outputs["blessed"],
        )

    @dsl.pipeline(
        name="k2e-job",
        description="The whole k2e job (convert, train, evaluate, export) as one task: one "
        "container start and one TensorFlow import instead of four.",
    )
    @components.described("model", "checkpoints", "metrics", "report", "export_path", "blessed")
    def job_pipeline(
        spec: str,
        train_files: str = "",
        eval_files: str = "",
        train_steps: int = 0,
        export_base: str = "",
        warm_start: str = "",
        overrides: str = "{}",
    ) -> JobOutputs:
        """The whole job as one task."""
        job = components.run_job(
            spec=spec,
            overrides=overrides,
            train_files=train_files,
            eval_files=eval_files,
            train_steps=train_steps,
            warm_start=warm_start,
            export_base=export_base,
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        )
        tasks.apply(job, "run_job")
        job.set_display_name("run job")
        return JobOutputs(
            model=job.outputs["model"],
            checkpoints=job.outputs["checkpoints"],
            metrics=job.outputs["metrics"],
            report=job.outputs["report"],
            export_path=job.outputs["export_path"],
            blessed=job.outputs["blessed"],
        )

    @dsl.pipeline(
        name="k2e-tfjob",
        description="The k2e job trained on a cluster: the spec's TFJob (chief, workers, parameter "
        "servers, evaluator) submitted and awaited; the chief exports and publishes.",
    )
    @components.described(
        "metrics",
        "export_path",
        "version",
        "blessed",
        export_base=components.TFJOB_EXPORT_BASE,
    )
    def tfjob_pipeline(
        spec: str,
        train_files: str = "",
        eval_files: str = "",
        train_steps: int = 0,
        export_base: str = "",
        overrides: str = "{}",
    ) -> TFJobOutputs:
        """The job as a TFJob: the spec's `cluster` section describes it, and its storage must
        be shared (s3://, gs://)."""
        job = components.run_tfjob(
            spec=spec,
            overrides=overrides,
            train_files=train_files,
            eval_files=eval_files,
            train_steps=train_steps,
            export_base=export_base,
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        )
        tasks.apply(job, "run_tfjob")
        job.set_display_name("run TFJob")
        return TFJobOutputs(
            metrics=job.outputs["metrics"],
            export_path=job.outputs["export_path"],
            version=job.outputs["version"],
            blessed=job.outputs["blessed"],
        )

    return Pipelines(training_pipeline, job_pipeline, tfjob_pipeline)


training_pipeline, job_pipeline, tfjob_pipeline = build()
