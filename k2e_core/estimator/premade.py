"""Pre-made Estimators on the job's data: the baseline a Keras candidate must beat.

The Estimator guide's workflow: a pre-made Estimator first, its results the baseline, then a
custom model. `baseline: {kind: linear | dnn}` trains `LinearClassifier`/`LinearRegressor`
or `DNNClassifier`/`DNNRegressor` (a classifier when the model's output is one: categorical
or binary cross-entropy, or text labels) on the columns the data plan maps, read by the same
input pipeline, with missing values dropped or filled as for the model. (TensorFlow
Estimator 2.15 has no BoostedTrees Estimators: upstream removed them in 2.9.)

Feature columns come from the training data (its first `STATS_ROWS` rows, read once and kept
in the baseline's model_dir, so every later step builds the same Estimator):

- numbers: `numeric_column`, standardised with the data's mean and standard deviation;
- text: `categorical_column_with_vocabulary_list` of the values seen (the most frequent
  `MAX_VOCABULARY`, one bucket for any other), as it is for linear models, one-hot
  (`indicator_column`) for DNNs, an `embedding_column` where a column has more than
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

from k2e_core.errors import SpecError
from k2e_core.estimator import data, pipeline
from k2e_core.estimator.compat import tf
from k2e_core.estimator.conversion import KERAS_DIR

log = logging.getLogger("k2e.baseline")

#: The baseline's own directory inside the job's model_dir (TensorBoard shows it as a run).
BASELINE_DIR = "baseline"
#: What the training data decided for the feature columns, in the baseline's records dir.
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
    """The feature columns and head the training data decided, as the baseline keeps them."""

    head: str  # "classifier" or "regressor"
    label: list  # label column(s)
    onehot: bool  # classifier labels given as one-hot rows
    n_classes: int | None
    label_vocabulary: list | None
    label_dimension: int
    weight: str | None
    numeric: dict  # column -> {"shape", "mean", "std"}
    text: dict  # column -> vocabulary, most frequent first
    rows: int  # training rows read to decide

    def columns(self) -> list:
        return [*self.numeric, *self.text]


def head_of(p: data.Plan) -> tuple[str, list, bool, int | None]:
    """(classifier | regressor, label columns, one-hot labels?, classes) of the model's one
    output; a model with several outputs has no pre-made counterpart."""
    if len(p.labels) != 1:
        raise SpecError(
            "baseline",
            f"a pre-made Estimator has one head; the model has {len(p.labels)} outputs",
            "leave the baseline out, or train it in a job for one of the outputs",
        )
    ((output, columns),) = p.labels.items()
    kind, classes = p.io.label_kinds[output]
    if kind == "value":
        return "regressor", columns, False, None
    onehot = kind == "onehot" and columns[0] not in p.vocabulary
    return "classifier", columns, onehot, 2 if kind == "binary" else classes


def refuse_unfit_columns(p: data.Plan) -> None:
    """Images and variable-length lists have no pre-made feature column here."""
    for c in feature_columns_of(p):
        if c in p.decode or c in p.varlen:
            what = "encoded images" if c in p.decode else "lists of varying length"
            raise SpecError(
                "baseline",
                f"column {c!r} holds {what}; pre-made Estimators here take numbers and text",
                "leave the baseline out for this model",
            )


def feature_columns_of(p: data.Plan) -> list:
    return list(dict.fromkeys(c for cols in p.features.values() for c in cols))


def example(design: Design):
    """(plan, a batch of columns) -> (features by column, label), for `pipeline.input_fn`."""

    def make(p: data.Plan, cols: dict):
        features = {c: pipeline.fill_column(p, c, cols[c]) for c in design.columns()}
        label = pipeline.gather(cols, design.label)
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


def decide(p: data.Plan, source: data.Source, data_spec, kind: str) -> Design:
    """The design from the training data's first `STATS_ROWS` rows."""
    refuse_unfit_columns(p)
    head, label, onehot, classes = head_of(p)
    names = feature_columns_of(p)
    p = data.for_source(p, source)

    def columns(plan, cols):
        return {c: pipeline.fill_column(plan, c, cols[c]) for c in names}, tf.zeros([1])

    batch = 4096
    fn = pipeline.input_fn(p, source, data_spec, training=False, batch_size=batch, example=columns)
    seen = {c: [] for c in names}
    rows = 0
    for features, _ in fn().take(math.ceil(STATS_ROWS / batch)):
        for c in names:
            seen[c].append(features[c].numpy())
        rows += len(next(iter(features.values())).numpy())
    if not rows:
        raise SpecError("baseline", f"{source.field} holds no rows to train on", "check the data")
    numeric, text = {}, {}
    for c in names:
        values = np.concatenate(seen[c])
        if p.types[c] == "string":
            counts = Counter(v.decode() for v in values.reshape(-1))
            text[c] = [v for v, _ in counts.most_common(MAX_VOCABULARY)]
            continue
        values = values.astype(np.float64)
        std = values.std(axis=0)
        numeric[c] = {
            "shape": list(values.shape[1:]),
            "mean": values.mean(axis=0).tolist(),
            "std": np.where(std > 0, std, 1.0).tolist(),
        }
    vocabulary = p.vocabulary.get(label[0]) if len(label) == 1 else None
    width = sum(int(np.prod(source.columns[c].shape)) for c in label)
    return Design(
        head=head,
        label=label,
        onehot=onehot,
        n_classes=classes,
        label_vocabulary=vocabulary,
        label_dimension=max(width, 1),
        weight=p.sample_weight,
        numeric=numeric,
        text=text,
        rows=rows,
    )


def feature_columns(design: Design, spec) -> list:
    fc = tf.feature_column
    columns = []
    for c, stats in design.numeric.items():
        shape = tuple(stats["shape"]) or (1,)
        mean = np.asarray(stats["mean"], np.float32)
        std = np.asarray(stats["std"], np.float32)
        columns.append(fc.numeric_column(c, shape=shape, normalizer_fn=_standardise(mean, std)))
    for c, vocabulary in design.text.items():
        categorical = fc.categorical_column_with_vocabulary_list(c, vocabulary, num_oov_buckets=1)
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
        args["n_classes"] = len(design.label_vocabulary or ()) or design.n_classes
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


def describe(design: Design, spec) -> str:
    """One log line: what the baseline is and what it reads."""
    name = ESTIMATORS[(spec.kind, design.head)]
    parts = []
    if design.numeric:
        parts.append(f"{len(design.numeric)} numeric")
    if design.text:
        parts.append(f"{len(design.text)} text ({sum(map(len, design.text.values()))} values)")
    return f"{name} on {' and '.join(parts)} column(s), from {design.rows} training rows"


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
