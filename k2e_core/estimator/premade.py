"""Pre-made Estimators on the job's data: a baseline beside a Keras model, or the model itself.

The Estimator guide's workflow: a pre-made Estimator first, its results the baseline, then a
custom model. `LinearClassifier`/`LinearRegressor` or `DNNClassifier`/`DNNRegressor` (a
classifier for a classifier's labels: text, class ids, one-hot rows, 0/1) train on the
same inputs the data plan feeds a Keras model, read by the same input pipeline with
missing values dropped or filled the same way (`pipeline.model_inputs`). TensorFlow
Estimator 2.15 has no BoostedTrees Estimators: upstream removed them in 2.9.

Feature columns come from the training data (its first `STATS_ROWS` rows, read once and
kept in the Estimator's model_dir, so every later step builds the same Estimator):

- numbers: `numeric_column` of the input's shape, standardised with the data's mean and
  standard deviation;
- text: `categorical_column_with_vocabulary_list` of the values seen (the most frequent
  `MAX_VOCABULARY`, one bucket for any other), as it is for linear models, one-hot
  (`indicator_column`) for DNNs, an `embedding_column` where it has more than
  `embedding_above` values.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np

from k2e_core import signatures
from k2e_core.errors import ExportMismatch, SpecError
from k2e_core.estimator import export
from k2e_core.estimator.compat import tf
from k2e_core.inputs import data, pipeline
from k2e_core.inputs.data import KERAS_DIR

log = logging.getLogger("k2e.premade")

#: A baseline's own directory inside the job's model_dir (TensorBoard shows it as a run).
BASELINE_DIR = "baseline"
#: What the training data decided for the feature columns, in model_dir's records.
DESIGN_FILE = "k2e-premade.json"
STATS_ROWS = 100_000
MAX_VOCABULARY = 10_000
DEFAULTS = {"hidden_units": [32, 16], "embedding_above": 20}
ESTIMATORS = {
    ("linear", "classifier"): "LinearClassifier",
    ("linear", "regressor"): "LinearRegressor",
    ("dnn", "classifier"): "DNNClassifier",
    ("dnn", "regressor"): "DNNRegressor",
}


@dataclass
class Design:
    """The feature columns and head the training data decided, as model_dir keeps them."""

    head: str  # "classifier" or "regressor"
    output: str  # the model output whose labels it learns
    onehot: bool  # classifier labels given as one-hot rows
    n_classes: int | None
    label_vocabulary: list | None
    label_dimension: int
    weight: str | None
    numeric: dict  # input -> {"shape", "mean", "std"}
    text: dict  # input -> vocabulary, most frequent first
    rows: int  # training rows read to decide

    def inputs(self) -> list:
        return [*self.numeric, *self.text]


# --------------------------------------------------------------------------- a model of its own


def model_io(data_spec, train: data.Source) -> data.ModelIO:
    """The inputs and output a pre-made model stands for: `data.features` (default: every
    column but the label and weight columns, each an input of its own), typed as the
    columns are (or as `data.columns` declares them), and the label column's output: a
    classifier for text or integer labels, a regressor for numbers."""
    if data_spec.labels is None or isinstance(data_spec.labels, dict):
        raise SpecError(
            "data.labels",
            "a pre-made model learns one label column",
            "name it, e.g. data.labels: species",
        )
    labels = [data_spec.labels] if isinstance(data_spec.labels, str) else data_spec.labels
    if len(labels) != 1:
        raise SpecError(
            "data.labels", f"{labels} are several columns", "a pre-made model learns one"
        )
    label = labels[0]
    features = data_spec.features or {
        c: c for c in train.columns if c not in (label, data_spec.sample_weight)
    }
    inputs = {}
    for name, columns in features.items():
        # columns the files lack are named by the plan's own checks
        columns = [
            c for c in ([columns] if isinstance(columns, str) else columns) if c in train.columns
        ]
        kinds = {data_spec.columns.get(c) or train.columns[c].dtype for c in columns}
        if "string" in kinds and len(kinds) > 1:
            raise SpecError(
                f"data.features.{name}",
                f"mixes text and number columns {columns}",
                "give text and number columns inputs of their own",
            )
        width = sum(int(np.prod(train.columns[c].shape)) for c in columns)
        dtype = "string" if "string" in kinds else "float32" if "float" in kinds else "int64"
        inputs[name] = ((width,), dtype)
    stored = train.columns.get(label)
    kind = data_spec.columns.get(label) or (stored.dtype if stored else None)
    classifier = kind in ("string", "int") or data_spec.label_vocabulary is not None
    return data.ModelIO(
        inputs=inputs,
        outputs=[label],
        output_keys=[label],
        label_kinds={label: ("sparse", None) if classifier else ("value", None)},
        output_units={label: 1},
    )


# --------------------------------------------------------------------------- the design


def head_of(p: data.Plan) -> tuple[str, str, bool, int | None]:
    """(classifier | regressor, output, one-hot labels?, classes) of the plan's one output;
    a model with several outputs has no pre-made counterpart."""
    if len(p.labels) != 1:
        raise SpecError(
            "baseline",
            f"a pre-made Estimator has one head; the model has {len(p.labels)} outputs",
            "leave the baseline out, or train it in a job for one of the outputs",
        )
    ((output, columns),) = p.labels.items()
    kind, classes = p.io.label_kinds[output]
    if kind == "value":
        return "regressor", output, False, None
    onehot = kind == "onehot" and columns[0] not in p.vocabulary
    return "classifier", output, onehot, 2 if kind == "binary" else classes


def refuse_unfit_inputs(p: data.Plan, field: str) -> None:
    """Images and variable-length lists have no pre-made feature column here."""
    for name, columns in p.features.items():
        if any(c in p.decode or c in p.varlen for c in columns) or name in p.io.ragged:
            what = "encoded images" if columns[0] in p.decode else "lists of varying length"
            raise SpecError(
                field,
                f"input {name!r} holds {what}; pre-made Estimators here take numbers and text",
                "leave the baseline out for this model"
                if field == "baseline"
                else "use a Keras model (model.factory)",
            )


def example(design: Design):
    """(plan, a batch of columns) -> (features by input, label), for `pipeline.input_fn`:
    the inputs as the Keras model would get them, the label as the pre-made head takes it."""

    def make(p: data.Plan, cols: dict):
        features = pipeline.model_inputs(p, pipeline.stacked_inputs(p, cols))
        features = {name: features[name] for name in design.inputs()}
        label = pipeline.gather(cols, p.labels[design.output])
        if design.weight:  # eval files without the weight column are evaluated unweighted
            weight = cols.get(design.weight)
            features[design.weight] = (
                tf.ones([tf.shape(label)[0]]) if weight is None else tf.cast(weight, tf.float32)
            )
        if design.label_vocabulary:
            label = tf.reshape(label, [-1, 1])
        elif design.head == "classifier":
            label = tf.argmax(label, axis=-1) if design.onehot else tf.reshape(label, [-1])
            label = tf.cast(label, tf.int64)[:, None]
        else:
            label = tf.reshape(tf.cast(label, tf.float32), [-1, design.label_dimension])
        return features, label

    return make


def decide(p: data.Plan, source: data.Source, data_spec, field: str, n_classes=None) -> Design:
    """The design from the training data's first `STATS_ROWS` rows. `n_classes`: a
    classifier's classes where the plan does not know them (default: the largest id + 1)."""
    refuse_unfit_inputs(p, field)
    head, output, onehot, classes = head_of(p)
    p = data.for_source(p, source)
    names = list(p.features)
    label_columns = p.labels[output]

    def inputs_and_labels(plan, cols):
        features = pipeline.model_inputs(plan, pipeline.stacked_inputs(plan, cols))
        return {n: features[n] for n in names}, pipeline.gather(cols, label_columns)

    batch = 4096
    fn = pipeline.input_fn(
        p, source, data_spec, training=False, batch_size=batch, example=inputs_and_labels
    )
    seen = {n: [] for n in names}
    labels = []
    for features, label in fn().take(math.ceil(STATS_ROWS / batch)):
        for n in names:
            seen[n].append(features[n].numpy())
        labels.append(label.numpy())
    rows = sum(len(a) for a in labels)
    if not rows:
        raise SpecError(field, f"{source.field} holds no rows to train on", "check the data")
    numeric, text = {}, {}
    for n in names:
        values = np.concatenate(seen[n])
        if values.dtype.kind in "SOU":
            counts = Counter(v.decode() for v in values.reshape(-1))
            text[n] = [v for v, _ in counts.most_common(MAX_VOCABULARY)]
            continue
        values = values.astype(np.float64)
        std = values.std(axis=0)
        numeric[n] = {
            "shape": list(values.shape[1:]),
            "mean": values.mean(axis=0).tolist(),
            "std": np.where(std > 0, std, 1.0).tolist(),
        }
    vocabulary = p.vocabulary.get(label_columns[0])
    if head == "classifier" and not vocabulary and not onehot:
        classes = classes or n_classes or max(2, int(np.concatenate(labels).max()) + 1)
    return Design(
        head=head,
        output=output,
        onehot=onehot,
        n_classes=len(vocabulary) if vocabulary else classes,
        label_vocabulary=vocabulary,
        label_dimension=int(np.prod(labels[0].shape[1:])) if head == "regressor" else 1,
        weight=p.sample_weight,
        numeric=numeric,
        text=text,
        rows=rows,
    )


def feature_columns(design: Design, spec) -> list:
    fc = tf.feature_column
    columns = []
    for name, stats in design.numeric.items():
        mean = np.asarray(stats["mean"], np.float32)
        std = np.asarray(stats["std"], np.float32)
        columns.append(
            fc.numeric_column(
                name, shape=tuple(stats["shape"]) or (1,), normalizer_fn=_standardise(mean, std)
            )
        )
    for name, vocabulary in design.text.items():
        categorical = fc.categorical_column_with_vocabulary_list(
            name, vocabulary, num_oov_buckets=1
        )
        if spec.kind == "linear":
            columns.append(categorical)
        elif len(vocabulary) > (spec.embedding_above or DEFAULTS["embedding_above"]):
            dimension = max(2, round(6 * len(vocabulary) ** 0.25))
            columns.append(fc.embedding_column(categorical, dimension))
        else:
            columns.append(fc.indicator_column(categorical))
    return columns


def _standardise(mean, std):
    """(x - mean) / std in float32: the normalizer runs before numeric_column's own cast, so
    an integer column would be shifted and scaled in integers."""

    def standardise(x):
        return (tf.cast(x, tf.float32) - mean) / std

    return standardise


def _optimizer(spec):
    if spec.optimizer is None and spec.learning_rate is None:
        return None
    name = spec.optimizer or {"linear": "Ftrl", "dnn": "Adagrad"}[spec.kind]
    optimizers = tf.keras.optimizers.legacy
    make = {
        "Adagrad": optimizers.Adagrad,
        "Adam": optimizers.Adam,
        "Ftrl": optimizers.Ftrl,
        "RMSProp": optimizers.RMSprop,
        "SGD": optimizers.SGD,
    }[name]
    rate = spec.learning_rate
    return lambda: make(learning_rate=rate) if rate else make()


def estimator(design: Design, spec, config):
    """The pre-made Estimator `spec.kind` of `design`, in `config.model_dir`."""
    name = ESTIMATORS[(spec.kind, design.head)]
    args = {
        "feature_columns": feature_columns(design, spec),
        "config": config,
        "weight_column": design.weight,
    }
    if design.head == "classifier":
        args["n_classes"] = design.n_classes
        if design.label_vocabulary:
            args["label_vocabulary"] = design.label_vocabulary
    else:
        args["label_dimension"] = design.label_dimension
    optimizer = _optimizer(spec)
    if optimizer is not None:
        args["optimizer"] = optimizer
    if spec.kind == "dnn":
        args["hidden_units"] = spec.hidden_units or DEFAULTS["hidden_units"]
        if spec.dropout:
            args["dropout"] = spec.dropout
    return getattr(tf.estimator, name)(**args)


def metric_names(head: str, n_classes: int | None) -> list:
    """What the pre-made Estimator's evaluation reports (its head's metrics)."""
    if head == "regressor":
        return ["average_loss", "label/mean", "loss", "prediction/mean"]
    if n_classes == 2:
        return [
            "accuracy",
            "accuracy_baseline",
            "auc",
            "auc_precision_recall",
            "average_loss",
            "label/mean",
            "loss",
            "precision",
            "prediction/mean",
            "recall",
        ]
    return ["accuracy", "average_loss", "loss"]


def describe(design: Design, spec) -> str:
    """One log line: what the Estimator is and what it reads."""
    name = ESTIMATORS[(spec.kind, design.head)]
    parts = []
    if design.numeric:
        parts.append(f"{len(design.numeric)} numeric")
    if design.text:
        parts.append(f"{len(design.text)} text ({sum(map(len, design.text.values()))} values)")
    return f"{name} on {' and '.join(parts)} input(s), from {design.rows} training rows"


# --------------------------------------------------------------------------- records


def load_design(model_dir: str) -> Design | None:
    path = os.path.join(model_dir, KERAS_DIR, DESIGN_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return Design(**json.load(f))


def save_design(model_dir: str, design: Design) -> None:
    os.makedirs(os.path.join(model_dir, KERAS_DIR), exist_ok=True)
    with open(os.path.join(model_dir, KERAS_DIR, DESIGN_FILE), "w") as f:
        json.dump(asdict(design), f)


# --------------------------------------------------------------------------- export


def serving_input_fn(io: data.ModelIO, plan: data.Plan):
    """tf.Example input (`examples`: what TF Serving's Classify and Regress APIs send),
    parsed with the fills as defaults; and, as the `raw` alternative, the parsed inputs
    themselves, one tensor per input. Both go through `pipeline.model_inputs`."""
    spec = signatures.feature_spec(io, plan)

    def receiver():
        serialized = tf.compat.v1.placeholder(tf.string, [None], name="input_example_tensor")
        parsed = tf.io.parse_example(serialized, spec)
        return tf.estimator.export.ServingInputReceiver(
            pipeline.model_inputs(plan, parsed),
            {"examples": serialized},
            receiver_tensors_alternatives={"raw": parsed},
        )

    return receiver


def export_verified(estimator, io, plan, design, export_spec, sample) -> tuple[str, dict]:
    """Exports (`export.exported`) and checks that every signature predicts what the
    Estimator itself predicts for `sample` (rows as a client sends them)."""

    def verify(loaded, signatures) -> dict:
        if not export_spec.verify_rows or sample is None:
            return {}
        return _verify(estimator, loaded, io, plan, design, sample, export_spec)

    return export.exported(estimator, serving_input_fn(io, plan), verify)


def _verify(estimator, loaded, io, plan, design, sample, export_spec) -> dict:
    rows = {k: v[: export_spec.verify_rows] for k, v in sample.items()}
    count = len(next(iter(rows.values())))

    def features():
        filled = pipeline.model_inputs(plan, {k: tf.constant(v) for k, v in rows.items()})
        return tf.data.Dataset.from_tensors({k: filled[k] for k in design.inputs()})

    key = "probabilities" if design.head == "classifier" else "predictions"
    expected = np.stack([p[key] for p in estimator.predict(features, yield_single_examples=True)])
    serialized = tf.constant(signatures.serialized_examples(rows))
    worst = 0.0
    for name, fn in loaded.signatures.items():
        arguments = fn.structured_input_signature[1]
        if set(arguments) == set(io.inputs):
            got = fn(**{k: tf.constant(rows[k], arguments[k].dtype) for k in arguments})
        else:
            got = fn(**{next(iter(arguments)): serialized})
        out = next(got[k] for k in (key, "scores", "outputs") if k in got).numpy()
        out = out.reshape(expected.shape)
        diff = float(np.max(np.abs(out - expected)))
        worst = max(worst, diff)
        if not np.allclose(out, expected, atol=export_spec.atol, rtol=export_spec.rtol):
            raise ExportMismatch(
                f"export: signature {name!r} differs from the Estimator's predictions by up "
                f"to {diff:.3g} on {count} rows (atol {export_spec.atol}); nothing was published"
            )
    log.info(
        "verified %d rows on %d signature(s): max |SavedModel - Estimator| = %.2e",
        count,
        len(loaded.signatures),
        worst,
    )
    return {"verified_rows": count, "max_abs_diff": worst}
