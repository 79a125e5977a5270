"""Input pipelines from data files (CSV, TFRecord of tf.train.Example, NumPy .npz).

Every format runs the same pipeline: records -> [cache] -> [shuffle] -> repeat -> batch ->
vectorised parse -> (features, labels) -> prefetch. Before anything trains, `plan` checks the
files' columns against the model's inputs and outputs and names both sides of a mismatch.
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass, field, replace

import numpy as np
from k2e_core._tensorflow import tf

from k2e_core import storage
from k2e_core.errors import SpecError, first_line

AUTOTUNE = tf.data.AUTOTUNE


@dataclass(frozen=True)
class Column:
    dtype: str  # "float", "int" or "string"
    shape: tuple  # per-example shape: () for a CSV cell, (n,) for a TFRecord list


@dataclass
class Source:
    """One split's local files, their format and the columns they hold."""

    field: str  # spec field, e.g. "data.train"
    files: list
    format: str
    columns: dict
    csv_header: list = field(default_factory=list)


@dataclass
class ModelIO:
    inputs: dict  # input name -> (per-example shape, tf dtype name)
    outputs: list  # output names (layer names), in model order
    output_keys: list  # dict-output keys where outputs are a dict, else the names


@dataclass
class Plan:
    """Which columns feed which model input and label."""

    features: dict  # input name -> list of columns
    labels: dict  # output name -> list of columns
    sample_weight: str | None
    io: ModelIO

    def columns(self):
        cols = [c for cs in (*self.features.values(), *self.labels.values()) for c in cs]
        if self.sample_weight:
            cols.append(self.sample_weight)
        return list(dict.fromkeys(cols))


def model_io(model) -> ModelIO:
    from k2e_core.conversion import output_keys_of

    inputs = {}
    for name, tensor in zip(model.input_names, model.inputs):
        inputs[name] = (tuple(tensor.shape[1:]), tensor.dtype.name)
    return ModelIO(inputs=inputs, outputs=list(model.output_names), output_keys=output_keys_of(model))


# --------------------------------------------------------------------------- sources

def _format_of(path: str, declared: str) -> str:
    if declared != "auto":
        return declared
    name = path.lower().removesuffix(".gz")
    for ext, fmt in ((".csv", "csv"), (".tfrecord", "tfrecord"), (".tfrecords", "tfrecord"),
                     (".npz", "npz")):
        if name.endswith(ext):
            return fmt
    raise SpecError("format", f"cannot tell the format of {os.path.basename(path)}",
                    "set format to csv, tfrecord or npz")


def open_source(spec_field: str, files_spec, resolve, staging_dir: str) -> Source:
    """Resolves globs, fetches remote files into `staging_dir`, and reads the columns."""
    urls = []
    for pattern in files_spec.files:
        url = resolve(pattern)
        try:
            found = storage.glob(url)
        except (OSError, ValueError) as err:
            raise SpecError(f"{spec_field}.files", f"cannot list {storage.redact(url)} ({err})",
                            "check the URL and its credentials") from None
        if not found:
            raise SpecError(f"{spec_field}.files", f"no file matches {storage.redact(url)}",
                            "check the path, or generate the data first")
        urls.extend(found)
    try:
        fmt = _format_of(urls[0], files_spec.format)
    except SpecError as err:
        raise SpecError(f"{spec_field}.format", err.problem, err.fix) from None
    local = []
    os.makedirs(staging_dir, exist_ok=True)
    for i, url in enumerate(urls):
        if storage.is_local(url):
            local.append(storage.local_path(url))
        else:
            local.append(storage.fetch(url, os.path.join(staging_dir, str(i))))
    for path in local:
        if os.path.getsize(path) == 0:
            raise SpecError(f"{spec_field}.files", f"{path} is empty", "point it at a file with data")
    reader = {"csv": _csv_columns, "tfrecord": _tfrecord_columns, "npz": _npz_columns}[fmt]
    columns, header = reader(spec_field, local[0])
    return Source(field=spec_field, files=local, format=fmt, columns=columns, csv_header=header)


def fingerprint(source: Source) -> str:
    """A digest of the split's file contents: same digest, same data."""
    digest = hashlib.sha256()
    for path in source.files:
        digest.update(storage.sha256_file(path).encode())
    return digest.hexdigest()


def _open_text(path):
    import gzip

    return gzip.open(path, "rt", newline="") if path.endswith(".gz") else open(path, newline="")


def _kind(text: str) -> str:
    for kind, cast in (("int", int), ("float", float)):
        try:
            cast(text)
            return kind
        except ValueError:
            continue
    return "string"


_KINDS = ("int", "float", "string")
#: Rows read to tell a column's type: a float column may start with whole numbers ("1").
CSV_SAMPLE_ROWS = 1000


def _csv_columns(spec_field, path):
    with _open_text(path) as f:
        rows = csv.reader(f)
        header = next(rows, None)
        sample = [r for _, r in zip(range(CSV_SAMPLE_ROWS), rows)]
    if not header or not sample:
        raise SpecError(f"{spec_field}.files", f"{path} has no data rows",
                        "CSV files need a header line and at least one row")
    kinds = ["int"] * len(header)
    for r in sample:
        for i, value in enumerate(r[:len(header)]):
            if value != "" and kinds[i] != "string":
                kinds[i] = max(kinds[i], _kind(value), key=_KINDS.index)
    return {name: Column(kind, ()) for name, kind in zip(header, kinds)}, header


def _compression(path):
    return "GZIP" if path.endswith(".gz") else None


def _tfrecord_columns(spec_field, path):
    try:
        record = next(iter(tf.data.TFRecordDataset(path, _compression(path)).take(1)), None)
    except tf.errors.OpError as err:
        raise SpecError(f"{spec_field}.files", f"{path} is not a TFRecord file ({err.message})",
                        "write tf.train.Example records with tf.io.TFRecordWriter") from None
    if record is None:
        raise SpecError(f"{spec_field}.files", f"{path} holds no records", "point it at a file with data")
    example = tf.train.Example.FromString(record.numpy())
    columns = {}
    for name, feat in example.features.feature.items():
        kind = feat.WhichOneof("kind")
        values = getattr(feat, kind).value
        dtype = {"float_list": "float", "int64_list": "int", "bytes_list": "string"}[kind]
        columns[name] = Column(dtype, (len(values),))
    return columns, []


def _npz_columns(spec_field, path):
    try:
        with np.load(path) as arrays:
            columns = {k: Column(_np_kind(a.dtype), tuple(a.shape[1:])) for k, a in arrays.items()}
            rows = {len(a) for a in arrays.values()}
    except (OSError, ValueError) as err:
        raise SpecError(f"{spec_field}.files", f"{path} is not a NumPy .npz file ({err})",
                        "write it with numpy.savez") from None
    if rows == {0} or not rows:
        raise SpecError(f"{spec_field}.files", f"{path} holds no rows", "point it at a file with data")
    return columns, []


def _np_kind(dtype) -> str:
    if np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.bool_):
        return "int"
    if np.issubdtype(dtype, np.floating):
        return "float"
    return "string"


# --------------------------------------------------------------------------- plan

def _as_list(value):
    return [value] if isinstance(value, str) else list(value)


def plan(data_spec, io: ModelIO, sources) -> Plan:
    """Maps model inputs and outputs to columns and checks them against every source."""
    train = sources[0]
    inputs = list(io.inputs)
    if data_spec.features:
        unknown = sorted(set(data_spec.features) - set(inputs))
        if unknown:
            raise SpecError("data.features", f"{unknown} are not inputs of the model (inputs: {inputs})",
                            "key data.features by the model's input names")
        missing = [i for i in inputs if i not in data_spec.features]
        if missing:
            raise SpecError("data.features", f"model inputs {missing} have no columns",
                            f"add them, e.g. data.features.{missing[0]}: [column, ...]")
        features = {i: _as_list(data_spec.features[i]) for i in inputs}
    else:
        absent = [i for i in inputs if i not in train.columns]
        if absent:
            raise SpecError(
                "data.features",
                f"the model expects inputs {inputs} but {train.field} files provide "
                f"{sorted(train.columns)}",
                f"map inputs to columns with data.features (e.g. {absent[0]}: [column, ...])",
            )
        features = {i: [i] for i in inputs}

    labels = _label_columns(data_spec.labels, io, train)
    result = Plan(features=features, labels=labels, sample_weight=data_spec.sample_weight, io=io)
    if result.sample_weight and result.sample_weight not in train.columns:
        raise SpecError("data.sample_weight", f"column {result.sample_weight!r} is not in "
                        f"{train.field} files (they hold {sorted(train.columns)})",
                        "fix the column name")
    for source in sources:
        _check_source(for_source(result, source), source)
    return result


def for_source(p: Plan, source: Source) -> Plan:
    """The plan for one split: files without the weight column are read unweighted."""
    if p.sample_weight and p.sample_weight not in source.columns:
        return replace(p, sample_weight=None)
    return p


def _label_columns(spec_labels, io: ModelIO, train: Source) -> dict:
    outputs = io.outputs
    if spec_labels is None:
        keys = dict(zip(io.output_keys, outputs))
        found = {name: [key] for key, name in keys.items() if key in train.columns}
        found.update({n: [n] for n in outputs if n in train.columns and n not in found})
        if len(found) != len(outputs):
            raise SpecError(
                "data.labels",
                f"model outputs {io.output_keys} have no label columns in {train.field} files "
                f"({sorted(train.columns)})",
                "name the label column(s) with data.labels",
            )
        return found
    if isinstance(spec_labels, dict):
        by_name = {}
        for key, cols in spec_labels.items():
            if key in outputs:
                name = key
            elif key in io.output_keys:
                name = outputs[io.output_keys.index(key)]
            else:
                raise SpecError("data.labels", f"{key!r} is not an output of the model "
                                f"(outputs: {io.output_keys})", "key data.labels by output names")
            by_name[name] = _as_list(cols)
        missing = [o for o in outputs if o not in by_name]
        if missing:
            raise SpecError("data.labels", f"outputs {missing} have no label columns",
                            "give one entry per model output")
        return by_name
    if len(outputs) != 1:
        raise SpecError("data.labels", f"the model has {len(outputs)} outputs {io.output_keys}",
                        "give data.labels as a mapping output -> column(s)")
    return {outputs[0]: _as_list(spec_labels)}


def _check_source(p: Plan, source: Source) -> None:
    for where, mapping in (("data.features", p.features), ("data.labels", p.labels)):
        for key, cols in mapping.items():
            missing = [c for c in cols if c not in source.columns]
            if missing:
                raise SpecError(f"{where}.{key}", f"columns {missing} are not in {source.field} files "
                                f"(they hold {sorted(source.columns)})", "fix the column names")
            if any(source.columns[c].dtype == "string" for c in cols) and where == "data.labels":
                raise SpecError(f"{where}.{key}", f"label columns {cols} hold text",
                                "encode labels as numbers (class ids or one-hot)")
    for name, cols in p.features.items():
        shape, _ = p.io.inputs[name]
        width = sum(int(np.prod(source.columns[c].shape)) for c in cols)
        expected = int(np.prod(shape)) if all(d is not None for d in shape) else None
        if expected is not None and width != expected:
            raise SpecError(f"data.features.{name}", f"columns {cols if len(cols) < 8 else str(len(cols)) + ' columns'} "
                            f"give {width} values per example but the model input has shape "
                            f"{list(shape)} ({expected} values)", "map exactly that many values")


# --------------------------------------------------------------------------- pipelines

def input_fn(p: Plan, source: Source, data_spec, training: bool, seed=None, batch_size=None):
    """An Estimator input_fn over `source` following plan `p`."""
    batch = batch_size or data_spec.batch_size
    p = for_source(p, source)

    def fn():
        records, parse = _records(p, source, data_spec.parallel_reads)
        ds = records
        if data_spec.cache and training:
            ds = ds.cache()
        if training and data_spec.shuffle_buffer:
            ds = ds.shuffle(data_spec.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        if training:
            ds = ds.repeat()
        ds = ds.batch(batch, drop_remainder=False)
        ds = ds.map(lambda r: _structure(p, parse(r)), num_parallel_calls=AUTOTUNE,
                    deterministic=not training)
        prefetch = AUTOTUNE if data_spec.prefetch == "auto" else data_spec.prefetch
        return ds.prefetch(prefetch) if prefetch else ds

    return fn


def _records(p: Plan, source: Source, parallel_reads: int):
    """(record dataset, batched-records -> {column: tensor}) for the source's format."""
    wanted = p.columns()
    compression = _compression(source.files[0])
    if source.format == "csv":
        header = source.csv_header
        index = [header.index(c) for c in wanted]
        defaults = [_tf_default(source.columns[c].dtype) for c in wanted]

        def lines(path):
            return tf.data.TextLineDataset(path, compression_type=compression).skip(1)

        ds = _interleave(source.files, lines, parallel_reads).filter(lambda line: tf.strings.length(line) > 0)

        def parse(batch):
            values = tf.io.decode_csv(batch, record_defaults=defaults, select_cols=index)
            return dict(zip(wanted, values))

        return ds, parse
    if source.format == "tfrecord":
        spec = {c: tf.io.FixedLenFeature(source.columns[c].shape, _tf_dtype(source.columns[c].dtype))
                for c in wanted}
        ds = _interleave(source.files, lambda path: tf.data.TFRecordDataset(path, compression),
                         parallel_reads)
        return ds, lambda batch: tf.io.parse_example(batch, spec)
    arrays = {c: [] for c in wanted}
    for path in source.files:
        with np.load(path) as data:
            for c in wanted:
                arrays[c].append(data[c])
    arrays = {c: np.concatenate(v) for c, v in arrays.items()}
    return tf.data.Dataset.from_tensor_slices(arrays), lambda batch: batch


def _interleave(files, make, parallel_reads):
    if len(files) == 1:
        return make(files[0])
    return tf.data.Dataset.from_tensor_slices(files).interleave(
        make, cycle_length=min(len(files), parallel_reads), num_parallel_calls=AUTOTUNE,
    )


def _tf_dtype(kind):
    return {"float": tf.float32, "int": tf.int64, "string": tf.string}[kind]


def _tf_default(kind):
    return tf.constant([], dtype=_tf_dtype(kind))


def _structure(p: Plan, cols: dict):
    features = {}
    for name, columns in p.features.items():
        shape, dtype = p.io.inputs[name]
        tensor = _gather(cols, columns)
        if tf.as_dtype(dtype) != tensor.dtype and tf.as_dtype(dtype) != tf.string:
            tensor = tf.cast(tensor, dtype)
        if all(d is not None for d in shape):
            tensor = tf.reshape(tensor, [-1, *shape])
        features[name] = tensor
    labels = {name: _gather(cols, columns) for name, columns in p.labels.items()}
    labels = labels[p.io.outputs[0]] if len(labels) == 1 else labels
    if p.sample_weight:
        return {"features": features, "sample_weights": tf.cast(cols[p.sample_weight], tf.float32)}, labels
    return features, labels


def _gather(cols, columns):
    if len(columns) == 1:
        return cols[columns[0]]
    parts = [cols[c] if cols[c].shape.rank > 1 else cols[c][:, None] for c in columns]
    return tf.concat([tf.cast(t, parts[0].dtype) for t in parts], axis=-1)


def first_batch(p: Plan, source: Source, data_spec, rows: int):
    """The first `rows` examples as numpy (features, labels), in file order."""
    ds = input_fn(p, source, data_spec, training=False, batch_size=rows)()
    features, labels = next(iter(ds.take(1)))
    return tf.nest.map_structure(lambda t: t.numpy(), (features, labels))


def loss_name(loss):
    """A compiled loss's name ('sparse_categorical_crossentropy'), or the loss itself."""
    return getattr(loss, "name", None) or getattr(loss, "__name__", None) or loss


def check_labels_fit(model, p: Plan, source: Source, data_spec) -> None:
    """Runs the compiled loss on one batch so that a label/loss mismatch fails here, clearly."""
    features, labels = first_batch(p, source, data_spec, min(data_spec.batch_size, 64))
    weights = None
    if for_source(p, source).sample_weight:
        features, weights = features["features"], features["sample_weights"]
    try:
        predictions = model(features, training=False)
        model.compiled_loss(tf.nest.map_structure(tf.convert_to_tensor, labels), predictions,
                            sample_weight=weights)
    except (ValueError, tf.errors.InvalidArgumentError, TypeError) as err:
        label_shapes = tf.nest.map_structure(lambda a: list(a.shape), labels)
        output_shapes = [list(t.shape) for t in model.outputs]
        loss = loss_name(model._get_compile_args().get("loss"))
        raise SpecError(
            "data.labels",
            f"labels of shape {label_shapes} do not fit loss {loss!r} for outputs of shape "
            f"{output_shapes} ({first_line(err, 200)})",
            "use integer class ids with sparse_categorical_crossentropy, one-hot rows with "
            "categorical_crossentropy, or change data.labels",
        ) from None
