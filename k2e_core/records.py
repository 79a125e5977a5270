"""Typed records and step results: what k2e keeps beside its models, and what each step returns.

Records (gate decisions, warm-start records, version records, manifests) are written as JSON
and read back by this and later k2e releases, so they accept fields they do not know. Step
results are what the CLI prints and what the Airflow operators and KFP components receive:
plain JSON-serialisable dicts with exactly these models' keys (`as_result`).
`k2e schema NAME` prints each one's JSON Schema.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Metrics = dict[str, float | int | None]


class Record(BaseModel):
    """A record k2e writes; one written by a later release still reads."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def dump(self) -> dict:
        """The record as JSON-ready dict: the fields it was given, no others."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


class Result(Record):
    """A step's result: exactly these keys."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# --------------------------------------------------------------------------- gate


class GateCheck(Record):
    metric: str
    value: float
    op: Literal[">=", "<="]
    limit: float
    ok: bool
    baseline: int | None = Field(None, description="the blessed version compared with")
    baseline_value: float | None = None
    premade_baseline: str | None = Field(
        None, description="the pre-made baseline compared with (vs_baseline), e.g. LinearClassifier"
    )
    premade_value: float | None = Field(None, description="the pre-made baseline's value")


class PremadeBaseline(Record):
    """The job's pre-made baseline (`baseline:`): what it is, how long it trained, and its
    metrics on the candidate's eval data."""

    kind: Literal["linear", "dnn"]
    estimator: str = Field(description="the pre-made Estimator, e.g. LinearClassifier")
    model_dir: str
    global_step: int | None
    metrics: Metrics | None = Field(None, description="on the eval data (after training: none)")
    steps_trained: int | None = None
    train_seconds: float | None = None
    steps_per_second: float | None = None
    examples_per_second: float | None = None


class BaselineMeasure(Record):
    """The latest blessed version, measured on the candidate's eval data (or why not)."""

    version: int
    metrics: Metrics | None = None
    error: str | None = None


class EvalData(Record):
    """What the metrics were measured on: the eval files and a digest of their contents."""

    files: list[str]
    file_count: int | None = None
    sha256: str | None = None


class GateDecision(Record):
    """The gate's decision for one run's candidate, kept under export.base/.k2e/decisions."""

    blessed: bool
    by: Literal["gate", "forced", "hand"]
    passed: bool
    reason: str
    checks: list[GateCheck]
    baseline: BaselineMeasure | None
    premade_baseline: PremadeBaseline | None = None
    run_id: str
    checkpoint: str
    global_step: int | None
    metrics: Metrics
    eval_data: EvalData
    force: str | None
    decided_at: str


# --------------------------------------------------------------------------- warm start


class WarmStartRecord(Record):
    """Where a model_dir's first weights came from (model_dir/keras/k2e-warm-start.json)."""

    from_: str = Field(
        alias="from", description="latest, a version number, 'version' or 'checkpoint'"
    )
    url: str
    version: int | None = None
    optimizer_state: str | None = Field(
        None, description="the training checkpoint whose optimizer slots were taken"
    )
    skipped: str | None = Field(None, description="why the source was not applied")


# --------------------------------------------------------------------------- registry


class HistoryEvent(Record):
    at: str | None
    action: str
    by: str
    reason: str
    user: str | None = None


class VersionRecord(Record):
    """A version's or candidate's record (k2e-record.json beside its SavedModel)."""

    format: str
    run_id: str | None
    created: str | None
    metrics: Metrics
    eval_data: EvalData | None = None
    source: dict[str, Any]
    warm_start: WarmStartRecord | None = None
    gate: dict[str, Any] | None = Field(
        None, description="passed, checks, baseline and premade_baseline"
    )
    blessed: bool
    by: str
    reason: str
    pinned: bool = False
    history: list[HistoryEvent]


class ManifestFile(Record):
    size: int
    sha256: str
    md5: str | None = None


class Manifest(Record):
    """k2e-manifest.json: written last, so a version counts once every file it names is up."""

    format: str
    run_id: str | None
    created: str | None = None
    files: dict[str, ManifestFile]
    dirs: list[str] = []
    metrics: Metrics = {}
    source: dict[str, Any] = {}
    version: int | None = None
    candidate: str | None = None


# --------------------------------------------------------------------------- step results


class ConvertResult(Result):
    model_dir: str
    keras_checkpoint: str | None = Field(None, description="a Keras model's starting weights")
    inputs: dict[str, list[int | None]]
    outputs: list[str]
    global_step: int
    warm_start: WarmStartRecord | None
    convert_seconds: float


class StreamStats(Record):
    downloads: int = Field(description="files downloaded, every epoch counted")
    bytes: int
    peak_files: int = Field(description="the most files on local disk at once")


class UploadStats(Record):
    uploaded: int = Field(description="checkpoints uploaded while training went on")
    not_uploaded: int = Field(
        description="checkpoints not uploaded because a newer one took their place"
    )


class TrainResult(Result):
    """Training's outcome. In a cluster (TF_CONFIG) each task reports its own part: workers
    no checkpoint (the chief's), the evaluator its evaluations instead of training figures."""

    task: str | None = Field(None, description="the cluster task that ran (TF_CONFIG)")
    model_dir: str | None = None
    checkpoint: str | None = None
    global_step: int | None
    steps_trained: int | None = None
    train_seconds: float | None = None
    steps_per_second: float | None = None
    examples_per_second: float | None = None
    stopped_early: bool | None = None
    evaluations: int | None = Field(
        None, description="evaluations during training (eval.every_steps), or the evaluator's"
    )
    metrics: Metrics | None = Field(None, description="the last of those evaluations")
    rows_dropped: int | None = Field(
        None, description="data.missing: drop: rows training read and dropped for a missing value"
    )
    resume_download_bytes: int | None = None
    checkpoint_uploads: UploadStats | None = Field(
        None, description="model_dir on a store: the background uploads of checkpoints"
    )
    streamed: StreamStats | None = Field(
        None, description="remote training data: what streaming it downloaded"
    )
    premade_baseline: PremadeBaseline | None = Field(
        None, description="the pre-made baseline, trained after the model"
    )


class EvaluateResult(Result):
    model_dir: str | None = Field(None, description="the model_dir evaluated")
    metrics: Metrics
    checkpoint: str | None
    confusion_matrix: dict[str, Any] | None = None
    gate: GateDecision | None = None
    premade_baseline: PremadeBaseline | None = None
    global_step: int | None


class ExportResult(Result):
    model_dir: str | None = Field(None, description="the model_dir exported from")
    version: int | None
    export_path: str | None = None
    candidate_path: str | None = None
    manifest: str
    reused: bool
    files: int
    bytes: int
    signatures: list[str]
    verified_rows: int
    max_abs_diff: float | None
    export_base: str
    metrics: Metrics
    run_id: str
    global_step: int | None
    blessed: bool
    reason: str
    gate: GateDecision
    pruned: list[str]


class RunResult(Result):
    export_path: str | None
    candidate_path: str | None
    export_base: str
    version: int | None
    blessed: bool
    reason: str
    gate: GateDecision
    pruned: list[str]
    manifest: str
    metrics: Metrics
    global_step: int
    model_dir: str
    run_id: str
    task: str | None = None
    warm_start: WarmStartRecord | None
    reused: bool
    signatures: list[str]
    train: TrainResult
    premade_baseline: PremadeBaseline | None = None
    convert_seconds: float
    total_seconds: float


class ValidateResult(Result):
    valid: bool
    inputs: dict[str, list[int | None]]
    outputs: list[str]
    features: dict[str, list[str]]
    labels: dict[str, list[str]]
    train_files: int
    eval_files: int
    column_types: dict[str, str]
    checked: dict[str, dict[str, Any]]
    label_vocabulary: dict[str, list[Any]]
    fills: dict[str, Any]


class ReportResult(Result):
    report: str = Field(description="where the HTML page was written")
    pictures: int
    model_dir: str | None
    export_base: str | None
    versions: int = Field(description="versions and candidates in the registry's history")
    curves: list[str] = Field(description="the TensorBoard tags drawn")


SCHEMAS = {
    "decision": GateDecision,
    "warm-start": WarmStartRecord,
    "version": VersionRecord,
    "manifest": Manifest,
    "convert": ConvertResult,
    "train": TrainResult,
    "evaluate": EvaluateResult,
    "export": ExportResult,
    "run": RunResult,
    "validate": ValidateResult,
    "report": ReportResult,
}


def as_result(model: type[Result], values: dict) -> dict:
    """`values` checked against a step's result model, as the plain dict adapters receive."""
    return model.model_validate(values).dump()


def summary_line(result: dict) -> str:
    """A step's result as the one line an orchestrator's task log ends with: the outcome,
    the key metrics, the step and the speed (the whole result is the task's output)."""
    parts = []
    if "blessed" in result:
        if result["blessed"]:
            where = f"version {result.get('version')}" if result.get("version") else "blessed"
            parts.append(f"{where} published ({result.get('reason', '')})")
        else:
            parts.append(
                f"not blessed, kept as a candidate at {result.get('candidate_path')}: "
                f"{result.get('reason', '')}"
            )
    elif "valid" in result:
        parts.append("valid")
    elif "report" in result:
        parts.append(f"{result['pictures']} pictures at {result['report']}")
    metrics = {
        k: v
        for k, v in (result.get("metrics") or {}).items()
        if k != "global_step" and v is not None
    }
    if metrics:
        parts.append("  ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items())))
    if result.get("global_step") is not None:
        parts.append(f"step {result['global_step']}")
    rate = result.get("steps_per_second") or (result.get("train") or {}).get("steps_per_second")
    if rate:
        parts.append(f"{rate:.1f} steps/s")
    gate = result.get("gate")
    if gate and "blessed" not in result:
        parts.append(f"gate: {'blessed' if gate['blessed'] else 'not blessed'} ({gate['reason']})")
    return "; ".join(parts) or "done"
