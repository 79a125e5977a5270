"""The job spec: one JSON/YAML document that drives every step, validated by pydantic.

Relative paths in a spec file resolve against the file's own directory, so a spec and its
data travel together; specs given as dicts resolve against the working directory.
"""

from __future__ import annotations

import copy
import json
import math
import os
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from k2e_core.errors import SpecError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def unknown_protocol(url: str) -> str | None:
    """The protocol of `url` when fsspec has no filesystem for it (a typo such as `s4://`)."""
    protocol = url.split("://", 1)[0] if "://" in url else None
    if not protocol:
        return None
    import fsspec

    return None if protocol in fsspec.available_protocols() else protocol


def protocol_error(url: str, field: str) -> None:
    protocol = unknown_protocol(url)
    if protocol:
        raise SpecError(field, f"unknown protocol {protocol!r} in {url}", _PROTOCOL_FIX)


_PROTOCOL_FIX = "use a local path or a URL fsspec knows (file://, memory://, s3://, gs://...)"


def _known_protocol(url):
    protocol = unknown_protocol(url) if isinstance(url, str) else None
    if protocol:
        raise ValueError(f"unknown protocol {protocol!r} in {url}; {_PROTOCOL_FIX}")
    return url


class ExportHead(_Section):
    """One serving signature: `kind` of output and which model output feeds it."""

    kind: Literal["predict", "classification", "regression"] = "predict"
    output: str | None = Field(
        None, description="Model output (dict key or layer name); default: the signature name"
    )


class PremadeSpec(_Section):
    """A pre-made Estimator (LinearClassifier/Regressor or DNNClassifier/Regressor, by the
    label's kind) on feature columns derived from the data: numeric columns standardised
    with the training data's mean and standard deviation, text columns as vocabulary
    columns of the training data's values (one-hot or embedded for DNNs)."""

    kind: Literal["linear", "dnn", "boosted_trees"]

    optimizer: Literal["Adagrad", "Adam", "Ftrl", "RMSProp", "SGD"] | None = Field(
        None, description="Default: the Estimator's own (linear: Ftrl, dnn: Adagrad)"
    )
    learning_rate: float | None = Field(None, gt=0, description="Default: the optimizer's")
    hidden_units: list[Annotated[int, Field(gt=0)]] | None = Field(
        None, min_length=1, description="dnn: units per hidden layer; default [32, 16]"
    )
    dropout: float | None = Field(None, gt=0, lt=1, description="dnn: dropout rate")
    embedding_above: int | None = Field(
        None,
        gt=0,
        description="dnn: text columns with more distinct values than this get an embedding "
        "instead of a one-hot indicator; default 20",
    )

    @model_validator(mode="after")
    def _options_of_kind(self):
        if self.kind == "boosted_trees":
            raise ValueError(
                "kind boosted_trees: TensorFlow Estimator 2.15 has no BoostedTrees Estimators "
                "(removed upstream in 2.9, for TensorFlow Decision Forests); use linear or dnn"
            )
        for option in ("hidden_units", "dropout", "embedding_above"):
            if getattr(self, option) is not None and self.kind != "dnn":
                raise ValueError(
                    f"{option} is an option of kind dnn, not {self.kind}; remove it, or use "
                    "kind: dnn"
                )
        return self


class PremadeModelSpec(PremadeSpec):
    """A pre-made Estimator as the job's model."""

    n_classes: int | None = Field(
        None,
        ge=2,
        description="With integer class ids: the number of classes; default: the largest id "
        "in the training data + 1",
    )


class BaselineSpec(PremadeSpec):
    """A pre-made Estimator trained beside the model, as the baseline it must beat."""

    steps: int | None = Field(None, gt=0, description="Training steps; default: train.steps")


class ModelSpec(_Section):
    factory: str | None = Field(
        None,
        description="'package.module:function' or 'file.py:function' returning a compiled "
        "Keras model",
    )
    factory_kwargs: dict[str, Any] = Field(default_factory=dict)
    path: str | None = Field(
        None, description="URL of a saved compiled model (.keras, .h5 or SavedModel dir)"
    )
    custom_objects: dict[str, str] = Field(
        default_factory=dict, description="name -> 'package.module:Name'"
    )
    allow_unsafe_deserialization: bool = Field(
        False,
        description="Load a model.path whose Lambda layers are stored as Python bytecode. "
        "Loading runs that code with this process's rights and credentials: only for files "
        "you trust",
    )
    checkpoint_format: Literal["checkpoint", "saver"] = "checkpoint"
    metric_names_map: dict[str, str] | None = None
    export_outputs: dict[str, ExportHead] | None = None
    premade: PremadeModelSpec | None = Field(
        None,
        description="A pre-made Estimator as the model, instead of a Keras model: inputs "
        "from data.features (default: every column but the label), a classifier for text or "
        "integer labels, a regressor for numbers",
    )

    @model_validator(mode="after")
    def _one_source(self):
        sources = [f for f in ("factory", "path", "premade") if getattr(self, f)]
        if not sources:
            raise ValueError("no model source; set model.factory, model.path or model.premade")
        if len(sources) > 1:
            named = " and ".join(f"model.{f}" for f in sources)
            raise ValueError(
                f"{'both' if len(sources) == 2 else 'all of'} {named} are set; keep one of them"
            )
        if self.premade:
            keras_only = ["custom_objects", "metric_names_map", "export_outputs"]
            keras_only += ["factory_kwargs", "checkpoint_format", "allow_unsafe_deserialization"]
            given = [f for f in keras_only if f in self.model_fields_set]
            if given:
                raise ValueError(
                    f"model.{given[0]} is for Keras models; a pre-made model (model.premade) "
                    "does not read it"
                )
        return self


class DataFiles(_Section):
    files: list[str] = Field(description="File URLs or glob patterns")
    format: Literal["auto", "csv", "tfrecord", "npz", "parquet"] = "auto"

    @field_validator("files", mode="before")
    @classmethod
    def _one_or_many(cls, value):
        return [value] if isinstance(value, str) else value

    @field_validator("files")
    @classmethod
    def _not_empty(cls, value):
        if not value:
            raise ValueError("no files listed; list at least one file or glob")
        return value


Columns = str | list[str]
ColumnType = Literal["float", "int", "string"]
FILL_STATISTICS = ("mean", "median", "most_frequent")
DEFAULT_NA_VALUES = ["", "NA", "NaN", "N/A", "null"]


class ImageDecode(_Section):
    """How a column of encoded images (PNG/JPEG bytes) becomes the image input's pixels."""

    format: Literal["auto", "jpeg", "png"] = Field(
        "auto", description="auto: JPEG or PNG, told from the bytes"
    )
    resize: list[int] | None = Field(
        None,
        min_length=2,
        max_length=2,
        description="[height, width]; default: the image input's own height and width",
    )
    channels: int | None = Field(
        None, ge=1, le=4, description="default: the image input's last dimension"
    )


class DataSpec(_Section):
    train: DataFiles
    eval: DataFiles | None = None
    features: dict[str, Columns] | None = Field(
        None,
        description="model input name -> column/key, or list of columns stacked into one "
        "input; default: each input read from the key of the same name",
    )
    labels: Columns | dict[str, Columns] | None = Field(
        None,
        description="label column(s); for multi-output models output name -> column(s); "
        "default: the output names",
    )
    sample_weight: str | None = Field(None, description="Column holding per-example weights")
    columns: dict[str, ColumnType] = Field(
        default_factory=dict,
        description="column -> float, int or string where the file's own values would be read "
        "as the wrong type (e.g. zip_code: string); default: the model input's type for "
        "features, what the values look like otherwise",
    )
    na_values: list[str] = Field(
        default_factory=lambda: list(DEFAULT_NA_VALUES),
        description="Cells that mean 'missing' (and NaN floats)",
    )
    missing: Literal["error", "drop"] | dict[str, float | str | dict[str, Any]] = Field(
        "error",
        description="What a missing value does: error (stop, naming column and line), drop "
        "(skip the row; the count is logged), or column -> fill: a constant, or mean, median "
        "or most_frequent of the training data (computed once, recorded with the version, and "
        "applied by the exported signatures too); {constant: mean} fills the text 'mean'",
    )
    label_vocabulary: list[str] | dict[str, list[str]] | None = Field(
        None,
        description="Class names of a text label column, in class-id order (or label column "
        "-> names); default: the sorted names found in the training data",
    )
    decode: dict[str, ImageDecode] = Field(
        default_factory=dict,
        description="column of encoded PNG/JPEG bytes -> how it becomes the image input, e.g. "
        "image: {format: jpeg, resize: [224, 224]}; serving signatures take the same bytes",
    )
    scan_mb: Annotated[float, Field(ge=0)] | Literal["all"] = Field(
        16,
        description="MB of each split checked row by row before training (ragged rows, text "
        "in number columns, missing values, labels outside the classes), at about 12 MB/s for "
        "CSV; beyond it the start of each file, in equal parts; 'all' (or --full) checks "
        "everything, 0 nothing",
    )
    batch_size: int = Field(32, gt=0)
    shuffle_buffer: int = Field(10_000, ge=0, description="0 turns shuffling off")
    prefetch: int | Literal["auto"] = "auto"
    parallel_reads: int = Field(
        4, gt=0, description="Files read at once, a record of each in turn (shuffled order)"
    )
    local_files: int = Field(
        8,
        ge=2,
        description="Remote CSV and TFRecord files (s3://, gs://, ...) are streamed: training "
        "starts once the first are downloaded, the next download while it runs, and at most "
        "this many are on local disk at a time (each deleted once read, fetched again the "
        "next epoch unless cache keeps the records)",
    )
    cache: bool = Field(False, description="Keep parsed training data in memory after one pass")

    @field_validator("missing")
    @classmethod
    def _fills(cls, value):
        if isinstance(value, str):
            return value
        for column, fill in value.items():
            if isinstance(fill, dict) and set(fill) != {"constant"}:
                raise ValueError(
                    f"missing.{column}: {fill!r} is not a fill; use a constant, "
                    f"one of {list(FILL_STATISTICS)}, or {{constant: VALUE}}"
                )
            if isinstance(fill, bool):
                raise ValueError(
                    f"missing.{column}: a fill is a number, a text or one of "
                    f"{list(FILL_STATISTICS)}, got {fill!r}"
                )
        return value

    def fill_of(self, column: str):
        """('constant', value), ('mean'|'median'|'most_frequent', None), or None."""
        if not isinstance(self.missing, dict) or column not in self.missing:
            return None
        fill = self.missing[column]
        if isinstance(fill, dict):
            return "constant", fill["constant"]
        if fill in FILL_STATISTICS:
            return fill, None
        return "constant", fill


class EarlyStopping(_Section):
    metric: str = "loss"
    mode: Literal["min", "max"] = "min"
    patience_steps: int = Field(gt=0, description="Stop after this many steps without improvement")
    min_steps: int = Field(0, ge=0)
    check_every_steps: int = Field(100, gt=0)


class TrainSpec(_Section):
    steps: int = Field(
        gt=0,
        description="Total training steps for this model_dir; a rerun resumes and stops here",
    )
    early_stopping: EarlyStopping | None = None


EVALUATIONS_BY_DEFAULT = 5


class EvalSpec(_Section):
    steps: int | None = Field(None, gt=0, description="Default: the whole eval data once")
    every_steps: int | Literal["checkpoint", "end"] | None = Field(
        None,
        description="When run and train evaluate: at most every N steps (a checkpoint is "
        "saved there too, besides run_config's), at every checkpoint, or only at the end. "
        f"Default: {EVALUATIONS_BY_DEFAULT} times over train.steps",
    )
    throttle_secs: int = Field(0, ge=0, description="train_and_evaluate: min seconds between evals")

    @field_validator("every_steps")
    @classmethod
    def _positive(cls, value):
        if isinstance(value, int) and value <= 0:
            raise ValueError(
                f"must be a positive number of steps, 'checkpoint' or 'end', got {value}"
            )
        return value


class RunConfigSpec(_Section):
    save_checkpoints_secs: int | None = Field(
        60,
        gt=0,
        description="Checkpoint every N seconds (a retry loses at most that much training); "
        "each save costs about 0.1 s however small the model",
    )
    save_checkpoints_steps: int | None = Field(
        None, gt=0, description="Checkpoint every N steps instead of save_checkpoints_secs"
    )
    keep_checkpoint_max: int = Field(5, ge=0)
    save_summary_steps: int = Field(
        100,
        ge=0,
        description="TensorBoard's training curves: a point every N steps (loss and metrics "
        "averaged over them, steps/s); 0 turns them off",
    )
    tf_random_seed: int | None = None
    log_every_secs: float = Field(5.0, gt=0, description="Progress log interval")

    @model_validator(mode="after")
    def _steps_or_secs(self):
        if self.save_checkpoints_steps is not None:
            if "save_checkpoints_secs" in self.model_fields_set and self.save_checkpoints_secs:
                raise ValueError(
                    "save_checkpoints_steps and save_checkpoints_secs are both set; "
                    "keep one of them"
                )
            self.save_checkpoints_secs = None
        return self


class ExportSpec(_Section):
    base: str = Field(description="Export base URL; versions go to numbered subdirectories")
    serving_input: Literal["raw", "tf_example"] = "raw"
    verify_rows: int = Field(8, ge=0, description="Rows compared between SavedModel and Keras")
    atol: float = Field(1e-5, ge=0)
    rtol: float = Field(1e-4, ge=0)
    keep: int | None = Field(
        None,
        ge=1,
        description="Retention: keep the newest N versions (and N kept candidates); the latest "
        "blessed version and pinned ones are never deleted. Default: keep all",
    )

    @field_validator("base")
    @classmethod
    def _base_protocol(cls, value):
        return _known_protocol(value)


class VsBaseline(_Section):
    """The candidate against the job's pre-made baseline (`baseline:`), on the same eval data."""

    tolerance: float = Field(
        0.0,
        ge=0,
        description="How much worse than the pre-made baseline the candidate may be, in the "
        "metric's units (0: at least as good)",
    )
    metric: str | None = Field(
        None, description="The baseline's metric to compare with; default: the same name"
    )


class GateMetric(_Section):
    """One metric the gate checks: absolute bounds, no regression against the blessed version,
    and (vs_baseline) not worse than the job's pre-made baseline."""

    at_least: float | None = Field(None, description="Bless only if the metric is >= this")
    at_most: float | None = Field(None, description="Bless only if the metric is <= this")
    tolerance: float | None = Field(
        0.0,
        ge=0,
        description="How much worse than the blessed baseline (measured on the same eval data "
        "in the same run) the candidate may be, in the metric's units; null: not compared",
    )
    vs_baseline: VsBaseline | None = Field(
        None,
        description="Bless only if the candidate is not worse than the pre-made baseline "
        "(the job's `baseline:` section) by more than its tolerance",
    )
    better: Literal["higher", "lower"] | None = Field(
        None,
        description="Which way is better; default: 'higher' with at_least, 'lower' with "
        "at_most, else 'lower' for loss/error metrics and 'higher' for the rest",
    )


class GateSpec(_Section):
    """Which candidates become serving versions; with no metrics, every candidate does."""

    metrics: dict[str, GateMetric] = Field(default_factory=dict)
    baseline: Literal["latest_blessed", "none"] = Field(
        "latest_blessed", description="What the candidate must not regress against"
    )
    force: str | None = Field(
        None, description="Bless whatever the checks say, for this reason (recorded)"
    )


class StorageSpec(_Section):
    """fsspec options per protocol; credentials may also come from the environment."""

    options: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="protocol -> fsspec options, e.g. s3: {endpoint_url: ..., key: ..., "
        "secret: ...}",
    )
    retries: int = Field(5, ge=1, description="Attempts for transient storage errors")
    retry_seconds: float = Field(
        60.0,
        gt=0,
        description="Most seconds one storage operation spends on its attempts, waits included",
    )
    concurrency: int = Field(16, ge=1, description="Files transferred at once")


Role = Literal["chief", "worker", "ps", "evaluator"]


class KubernetesSpec(_Section):
    """How `k2e tfjob` writes the Kubeflow TFJob for `cluster` (training-operator,
    kubeflow.org/v1)."""

    image: str | None = Field(
        None, description="Container image with k2e installed (the Dockerfile)"
    )
    namespace: str = "default"
    name: str | None = Field(None, description="TFJob name; default: k2e-<digest of the spec>")
    resources: dict[Role, dict[str, Any]] = Field(
        default_factory=dict,
        description="role -> Kubernetes resources, e.g. worker: {requests: {cpu: '4', "
        "memory: 8Gi}}",
    )
    shared_volume: str | None = Field(
        None,
        description="PersistentVolumeClaim (ReadWriteMany) mounted at /k2e/shared in every "
        "replica. Parameter servers write checkpoint shards to the model_dir's local copy, so "
        "with ps the replicas must share it",
    )
    env_from_secret: str | None = Field(
        None, description="Secret whose keys become environment variables (storage credentials)"
    )
    service_account: str | None = None
    spec_url: str | None = Field(
        None,
        description="Where replicas read the job spec; default: the spec travels inside "
        "the manifest (storage.options secrets are then refused)",
    )
    backoff_limit: int = Field(3, ge=0, description="Retries of failed replicas (exit codes 128+)")
    poll_secs: float = Field(10.0, gt=0, description="How often a submitter checks the TFJob")
    timeout_secs: int | None = Field(None, gt=0, description="Submitters give up after this long")


class ClusterSpec(_Section):
    """The cluster a job trains on: chief only by default; `k2e run --cluster` launches it on
    this machine, `k2e tfjob` writes it as a TFJob. Each process learns its role from TF_CONFIG."""

    workers: int = Field(0, ge=0, description="Workers besides the chief")
    ps: int = Field(0, ge=0, description="Parameter servers (needed as soon as there are workers)")
    evaluator: bool = Field(
        False,
        description="A task that evaluates each new checkpoint "
        "(TensorBoard eval curves; what early stopping reads)",
    )
    strategy: Literal["between_graph", "parameter_server"] = Field(
        "between_graph",
        description="between_graph: variables placed on the ps by the Estimator's device setter; "
        "parameter_server: tf.compat.v1 ParameterServerStrategy (a worker's local GPUs too)",
    )
    max_worker_delay_secs: int = Field(
        0, ge=0, description="Upstream staggers worker i's start by 5*(i+1) s, up to this bound"
    )
    kubernetes: KubernetesSpec = Field(default_factory=KubernetesSpec)

    @model_validator(mode="after")
    def _workers_need_ps(self):
        if self.workers and not self.ps:
            raise ValueError(
                f"{self.workers} worker(s) but no ps: between-graph replication keeps "
                "the variables on parameter servers; set cluster.ps=1 or more"
            )
        return self

    def roles(self) -> dict[str, int]:
        """Task counts per role, in the order processes are started."""
        counts = {
            "ps": self.ps,
            "chief": 1,
            "worker": self.workers,
            "evaluator": int(self.evaluator),
        }
        return {role: n for role, n in counts.items() if n}


class JobSpec(_Section):
    """A k2e job: where the model comes from, where it trains, on what, and where it ships."""

    trainer: Literal["estimator", "keras"] = Field(
        "estimator",
        description="What trains the model: estimator (TensorFlow 2.15, the Keras model as an "
        "Estimator; clusters, pre-made models) or keras (TensorFlow 2.21 with Keras 3, one "
        "process; the same checkpoints-by-step, evaluation, curves, export and signatures). "
        "Each runs in its own interpreter (README, Trainers)",
    )
    model: ModelSpec
    model_dir: str = Field(description="Checkpoints and TensorBoard logs")
    data: DataSpec
    train: TrainSpec
    eval: EvalSpec = Field(default_factory=EvalSpec)
    run_config: RunConfigSpec = Field(default_factory=RunConfigSpec)
    export: ExportSpec | None = None
    storage: StorageSpec = Field(default_factory=StorageSpec)
    cluster: ClusterSpec = Field(default_factory=ClusterSpec)
    gate: GateSpec = Field(default_factory=GateSpec)
    baseline: BaselineSpec | None = Field(
        None,
        description="A pre-made Estimator trained on the same data (its own step budget, in "
        "model_dir/baseline; in a cluster by the chief alone, after the model) and evaluated "
        "on the same eval data: the baseline a candidate must beat "
        "(gate.metrics.NAME.vs_baseline)",
    )
    warm_start: str | None = Field(
        None,
        description="Where a new model_dir's weights come from: 'latest' (the latest blessed "
        "version under export.base, if any), a version number, a published version's URL, a "
        "checkpoint URL (or a model_dir: its latest checkpoint), or 'none'. Ignored when "
        "model_dir already holds training checkpoints (the run resumes instead)",
    )
    warm_start_mismatch: Literal["stop", "fresh"] = Field(
        "stop",
        description="When the warm-start checkpoint does not fit the model: stop the job "
        "naming the variables, or start from the model's own weights",
    )
    run_id: str | None = Field(
        None,
        description="Identity of this run (an Airflow run id, a KFP run id): a retried run "
        "publishes at most one version. Default: derived from model_dir and its checkpoint",
    )
    base_dir: str | None = Field(
        None, description="Directory relative paths resolve against (set by the loader)"
    )

    @field_validator("model_dir")
    @classmethod
    def _model_dir_protocol(cls, value):
        return _known_protocol(value)

    @field_validator("warm_start", mode="before")
    @classmethod
    def _warm_start_text(cls, value):
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return None if value in (None, "", "none") else value

    def eval_every_steps(self) -> int | None:
        """The most steps between evaluations during training, None: at checkpoints only."""
        every = self.eval.every_steps
        if every is None and not self.run_config.save_checkpoints_steps:
            return max(1, math.ceil(self.train.steps / EVALUATIONS_BY_DEFAULT))
        return every if isinstance(every, int) else None

    @model_validator(mode="after")
    def _one_step_cadence(self):
        every, saves = self.eval.every_steps, self.run_config.save_checkpoints_steps
        if isinstance(every, int) and saves and every != saves:
            raise ValueError(
                f"eval.every_steps ({every}) and run_config.save_checkpoints_steps ({saves}) "
                "differ: evaluation runs on checkpoints; keep one of them, or set both alike"
            )
        return self

    @model_validator(mode="after")
    def _premade_starts_fresh(self):
        if self.model.premade is not None and self.warm_start:
            raise ValueError(
                "warm_start: a pre-made model (model.premade) starts from its own initial "
                "weights; remove warm_start"
            )
        return self

    @model_validator(mode="after")
    def _baseline_where_compared(self):
        for name, rule in self.gate.metrics.items():
            if rule.vs_baseline is not None and self.baseline is None:
                raise ValueError(
                    f"gate.metrics.{name}.vs_baseline: the job has no baseline section; add "
                    "e.g. baseline: {kind: linear}"
                )
        return self

    @model_validator(mode="after")
    def _keras_trainer_scope(self):
        if self.trainer != "keras":
            return self
        refused = {
            "cluster": bool(self.cluster.workers or self.cluster.ps or self.cluster.evaluator),
            "model.premade": self.model.premade is not None,
            "baseline": self.baseline is not None,
            "model.checkpoint_format": self.model.checkpoint_format != "checkpoint",
        }
        for field, used in refused.items():
            if used:
                raise ValueError(
                    f"{field}: the keras trainer trains a Keras model in one process, with "
                    "Keras checkpoints and the signatures export.serving_input names; "
                    f"{field} is the estimator trainer's (set trainer: estimator, or remove "
                    f"{field})"
                )
        return self

    def path(self, value: str) -> str:
        """`value` as an absolute URL/path (relative ones against `base_dir`)."""
        if "://" in value or os.path.isabs(value):
            return value
        return os.path.normpath(os.path.join(self.base_dir or os.getcwd(), value))


def json_schema() -> dict:
    return JobSpec.model_json_schema()


def apply_overrides(raw: dict, overrides: list[str] | dict | None) -> dict:
    """`["train.steps=200", ...]` or `{"train.steps": 200}` applied to a raw spec dict."""
    raw = copy.deepcopy(raw)
    if not overrides:
        return raw
    items = (
        overrides.items() if isinstance(overrides, dict) else [parse_override(o) for o in overrides]
    )
    for dotted, value in items:
        node = raw
        keys = dotted.split(".")
        for key in keys[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[keys[-1]] = value
    return raw


def parse_override(item: str) -> tuple[str, Any]:
    """`"train.steps=200"` -> `("train.steps", 200)` (the value is read as YAML)."""
    dotted, sep, text = item.partition("=")
    if not sep or not dotted:
        raise SpecError("--set", f"{item!r} is not KEY=VALUE", "write it as --set train.steps=200")
    try:
        return dotted.strip(), yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as err:
        raise SpecError(
            "--set",
            f"{item!r}: the value is not valid YAML ({str(err).splitlines()[0]})",
            "quote text values: --set 'key=\"text\"'",
        ) from None


def load_spec(source, overrides=None) -> JobSpec:
    """A validated JobSpec from a JobSpec, a dict, a JSON/YAML string, or a file path/URL."""
    if isinstance(source, JobSpec):
        if not overrides:
            return source
        source = source.model_dump(exclude_unset=True)
    base_dir = None
    if isinstance(source, dict):
        raw = source
    elif isinstance(source, str) and source.lstrip().startswith("{"):
        try:
            raw = json.loads(source)
        except json.JSONDecodeError as err:
            raise SpecError(
                "spec",
                f"the inline JSON spec is not valid JSON ({err})",
                "fix the syntax, or pass the path of a spec file",
            ) from None
    else:
        raw, base_dir = _read_file(str(source), _storage_options(overrides))
    if not isinstance(raw, dict):
        where = (
            str(source)
            if isinstance(source, str) and not source.lstrip().startswith("{")
            else "the spec"
        )
        raise SpecError(
            "spec",
            f"{where} is not a mapping of fields",
            "write the job spec as a YAML/JSON object",
        )
    raw = apply_overrides(raw, overrides)
    if base_dir and not raw.get("base_dir"):
        raw["base_dir"] = base_dir
    try:
        return JobSpec.model_validate(raw)
    except ValidationError as err:
        raise spec_error(err) from None


def _storage_options(overrides) -> dict | None:
    """The storage options that overrides set (to read the spec itself from a store)."""
    try:
        return apply_overrides({}, overrides).get("storage", {}).get("options")
    except (SpecError, AttributeError):
        return None


def _read_file(location: str, storage_options=None):
    """The spec file's text; a URL is read with the storage options the overrides give."""
    from k2e_core import storage

    protocol_error(location, "spec")
    fix = "pass the path of a YAML or JSON job spec"
    with storage.configured(storage_options):
        try:
            if storage.is_local(location):
                with open(storage.local_path(location), "rb") as f:
                    data = f.read()
            else:
                data = storage.read_bytes(location)
        except FileNotFoundError:
            raise SpecError(
                "spec",
                f"no spec file at {storage.redact(location)}{storage.why_missing(location)}",
                fix,
            ) from None
        except IsADirectoryError:
            raise SpecError("spec", f"{location} is a directory", fix) from None
        except OSError as err:
            raise SpecError(
                "spec",
                f"cannot read {storage.redact(location)} ({str(err).splitlines()[0]})",
                "check the URL and its credentials "
                "(the environment's, or storage.options in an --overrides file)",
            ) from None
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise SpecError("spec", f"{storage.redact(location)} is not a text file", fix) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SpecError(
            "spec",
            f"{location} is not valid YAML/JSON ({str(err).splitlines()[0]})",
            "fix the syntax",
        ) from None
    base_dir = os.path.dirname(os.path.abspath(location)) if "://" not in location else None
    return raw, base_dir


_FIXES = {
    "extra_forbidden": "remove it or fix its spelling (see `k2e schema`)",
    "missing": "add it (see `k2e schema`)",
    "greater_than": "use a larger value",
    "greater_than_equal": "use a larger value",
    "literal_error": "use one of the allowed values",
}


def spec_error(err: ValidationError) -> SpecError:
    """The first pydantic error as a one-line SpecError naming the field and the fix."""
    first = err.errors()[0]
    field = ".".join(str(p) for p in first["loc"] if not str(p).startswith(("function-", "union[")))
    kind = first["type"]
    message = first["msg"].removeprefix("Value error, ")
    if kind == "extra_forbidden":
        message = "unknown field"
    elif kind == "missing":
        message = "required field is missing"
    elif (
        "input" in first
        and kind.endswith(("_type", "_parsing"))
        and field.split(".")[0] != "storage"
    ):
        message = f"{message}, got {first['input']!r}"
    fix = _FIXES.get(kind, "see `k2e schema` for the expected type")
    if kind == "value_error":
        return SpecError(field or "spec", message, "")
    return SpecError(field or "spec", message, fix)
