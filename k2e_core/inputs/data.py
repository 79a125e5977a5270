"""A split's data files (read by the format modules, `k2e_core.inputs.formats`) and the
plan that maps them to the model.

Before anything trains, `plan` maps the model's inputs and outputs to columns, decides each
column's type (declared in `data.columns`, else the model input's, else what the values look
like) and checks them against every source; `datacheck.scan` then reads the rows themselves
and `pipeline` builds the input pipelines.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field, replace

import numpy as np

from k2e_core import storage
from k2e_core.errors import SpecError
from k2e_core.inputs import formats
from k2e_core.inputs.formats import Source, files
from k2e_core.storage import stream
from k2e_core.tf_runtime import tf

log = logging.getLogger("k2e.data")

#: Where a model_dir keeps what the data resolved to (vocabularies, fill values), so that
#: every later step and the exported signatures use the same.
RECORD_FILE = "k2e-data.json"
#: model_dir's folder for what is kept beside the checkpoints: the data record, and the
#: Estimator trainer's warm-start Keras checkpoint.
KERAS_DIR = "keras"


@dataclass
class ModelIO:
    inputs: dict  # input name -> (per-example shape, tf dtype name)
    outputs: list  # output names (layer names), in model order
    output_keys: list  # dict-output keys where outputs are a dict, else the names
    label_kinds: dict = field(default_factory=dict)  # output name -> (kind, classes)
    output_units: dict = field(default_factory=dict)  # output name -> last dimension
    ragged: frozenset = frozenset()  # inputs declared Input(ragged=True)
    output_shapes: dict = field(default_factory=dict)  # output name -> shape with batch dim
    loss: object = None  # the compiled loss's name (or names), as errors show it


@dataclass(frozen=True)
class Plan:
    """Which columns feed which model input and label, and how each column is read. Built
    once (`plan`, then `datacheck.check` for what the training data decides), never changed
    in place."""

    features: dict  # input name -> list of columns
    labels: dict  # output name -> list of columns
    sample_weight: str | None
    io: ModelIO
    types: dict = field(default_factory=dict)  # column -> "float" | "int" | "string"
    vocabulary: dict = field(default_factory=dict)  # text label column -> class names
    fills: dict = field(default_factory=dict)  # column -> fill value (or statistic to compute)
    drop_missing: bool = False
    na_values: tuple = ()
    na_in_files: tuple | None = None  # the markers the checks met in CSV files; None: unknown
    decode: dict = field(default_factory=dict)  # column -> spec.ImageDecode
    varlen: frozenset = frozenset()  # list columns whose length varies between rows

    def columns(self):
        cols = [c for cs in (*self.features.values(), *self.labels.values()) for c in cs]
        if self.sample_weight:
            cols.append(self.sample_weight)
        return list(dict.fromkeys(cols))

    def label_columns(self):
        return [c for cs in self.labels.values() for c in cs]

    def padded_widths(self) -> dict:
        """Variable-length columns of dense inputs -> the width they are padded to (None: the
        longest row of each batch). Those of ragged inputs keep each row's length."""
        return {
            c: self.io.inputs[name][0][0]
            for name, cols in self.features.items()
            if name not in self.io.ragged
            for c in cols
            if c in self.varlen
        }

    def output_of(self, label_column: str) -> str:
        return next(o for o, cols in self.labels.items() if label_column in cols)

    def record(self) -> dict:
        """What this plan resolved from the training data, as model_dir keeps it."""
        return {"label_vocabulary": self.vocabulary, "fills": self.fills}


def model_io(inputs: dict, ragged, outputs: dict, output_keys, loss) -> ModelIO:
    """What the data must feed, from what a trainer reads off its Keras model: `inputs`
    {name: (per-example shape, dtype name)}, `ragged` (input names), `outputs` {name: shape
    with the batch dimension, in model order}, `output_keys` (None: known once built) and the
    compiled `loss`."""
    return ModelIO(
        inputs=inputs,
        outputs=list(outputs),
        output_keys=output_keys,
        label_kinds=label_kinds(outputs, loss),
        output_units={name: s[-1] if len(s) == 2 else None for name, s in outputs.items()},
        ragged=frozenset(ragged),
        output_shapes={name: list(s) for name, s in outputs.items()},
        loss=loss_name(loss) if not isinstance(loss, (dict, list, tuple)) else loss,
    )


def loss_name(loss):
    """A compiled loss's name ('sparse_categorical_crossentropy'), or the loss itself."""
    return getattr(loss, "name", None) or getattr(loss, "__name__", None) or loss


def label_kinds(outputs: dict, loss) -> dict:
    """Output name -> (kind, classes): 'sparse' (class ids), 'onehot', 'binary' (0/1) or
    'value' (anything else: regression, custom losses), from the compiled loss."""
    kinds = {}
    for i, (name, shape) in enumerate(outputs.items()):
        if isinstance(loss, dict):
            this = loss.get(name)
        elif isinstance(loss, (list, tuple)):
            this = loss[i] if i < len(loss) else None
        else:
            this = loss
        text = str(loss_name(this) or "").lower()
        units = shape[-1] if len(shape) else 1
        if "sparse_categorical" in text:
            kinds[name] = ("sparse", units)
        elif "categorical" in text:
            kinds[name] = ("onehot", units)
        elif "binary" in text and units == 1:
            kinds[name] = ("binary", 2)
        else:
            kinds[name] = ("value", None)
    return kinds


# --------------------------------------------------------------------------- sources


def open_source(
    spec_field: str, files_spec, resolve, staging_dir: str, na_values=(), local_files: int = 8
) -> Source:
    """Resolves globs and reads the columns. Remote files are read as their format reads
    them (`formats`): streamed while training reads them, `local_files` on disk at most;
    fetched into `staging_dir` now; or read at their URL."""
    urls, partitions = [], {}
    for pattern in files_spec.files:
        url = resolve(pattern)
        try:
            directory = storage.isdir(url)
            found = [] if directory else storage.glob(url)
        except (OSError, ValueError) as err:
            raise SpecError(
                f"{spec_field}.files",
                f"cannot list {storage.redact(url)} ({err})",
                "check the URL and its credentials",
            ) from None
        if directory:
            urls.extend(_dataset_files(spec_field, url, partitions))
            continue
        if not found:
            raise SpecError(
                f"{spec_field}.files",
                f"no file matches {storage.redact(url)}{storage.why_missing(url)}",
                "check the path, or generate the data first",
            )
        urls.extend(found)
    try:
        fmt = formats.of_file(urls[0], files_spec.format)
    except SpecError as err:
        raise SpecError(f"{spec_field}.format", err.problem, err.fix) from None
    module = formats.of(fmt)
    if partitions and fmt != "parquet":
        raise SpecError(
            f"{spec_field}.files",
            f"{storage.redact(next(iter(partitions)))} is in a partition folder (key=value)",
            "partition columns are read from Parquet datasets; list the files of other formats",
        )
    os.makedirs(staging_dir, exist_ok=True)
    remote = not all(storage.is_local(u) for u in urls)
    starts = None
    if remote and module.REMOTE == "stream":
        source = Source(field=spec_field, files=urls, format=fmt, columns={})
        source.stream = stream.RemoteFiles(os.path.join(staging_dir, "stream"), local_files)
        log.info(
            "%s: %d remote file(s) streamed while training reads them, at most %d on local "
            "disk at a time",
            spec_field,
            len(urls),
            source.stream.keep,
        )
        starts = files.file_starts(
            source, 1, COLUMNS_SAMPLE_BYTES, os.path.join(staging_dir, "head")
        )
        path, name, _ = next(starts)
    elif remote and module.REMOTE == "direct":
        source = Source(field=spec_field, files=urls, format=fmt, columns={})
        path, name = urls[0], source.names()[0]
    else:
        local = []
        for i, url in enumerate(urls):
            if storage.is_local(url):
                local.append(storage.local_path(url))
            else:
                local.append(storage.fetch(url, os.path.join(staging_dir, str(i))))
        for path in local:
            files.refuse_empty(spec_field, path, path)
        source = Source(field=spec_field, files=local, format=fmt, columns={})
        path = name = local[0]
    source.columns, source.csv_header = module.columns(spec_field, path, name, na_values)
    if partitions:
        source.partitions = partitions
        source.columns = formats.parquet.with_partitions(source.columns, partitions)
    if starts is not None:
        starts.close()  # deletes the start of the first file, read for its columns
    return source


def _dataset_files(spec_field: str, url: str, partitions: dict) -> list[str]:
    """The data files below a directory (a dataset as Spark or pyarrow writes it), without
    its `_SUCCESS`-like and hidden files, noting hive-style `key=value` partition values of
    each in `partitions`."""
    below = sorted(storage.join(url, rel) for rel in storage.find(url))
    data_files = [
        f
        for f in below
        if not any(part.startswith(("_", ".")) for part in f[len(url) :].strip("/").split("/"))
    ]
    if not data_files:
        raise SpecError(
            f"{spec_field}.files",
            f"{storage.redact(url)} is a directory without data files",
            "point it at the dataset's directory, or list its files",
        )
    for f in data_files:
        values = formats.parquet.partitions_of(f, url)
        if values:
            partitions[f] = values
    return data_files


#: Bytes of a streamed file's start read for its columns (the CSV type sample, the first
#: TFRecords) before the data check reads its own share.
COLUMNS_SAMPLE_BYTES = 1 << 20


def fingerprint(source: Source) -> str:
    """A digest of the split's file contents: same digest, same data."""
    if not all(storage.is_local(f) for f in source.files):
        return stream.sha256_of(source.files)
    digest = hashlib.sha256()
    for path in source.files:
        digest.update(storage.sha256_file(path).encode())
    return digest.hexdigest()


# --------------------------------------------------------------------------- plan


def _as_list(value):
    return [value] if isinstance(value, str) else list(value)


def _kind_of_dtype(dtype) -> str:
    dtype = tf.as_dtype(dtype)
    return (
        "string" if dtype == tf.string else "int" if dtype.is_integer or dtype.is_bool else "float"
    )


def plan(data_spec, io: ModelIO, sources, record: dict | None = None) -> Plan:
    """Maps model inputs and outputs to columns and checks them against every source.
    `record`: what an earlier step of the same model_dir resolved (vocabularies, fills)."""
    train = sources[0]
    inputs = list(io.inputs)
    if data_spec.features:
        unknown = sorted(set(data_spec.features) - set(inputs))
        if unknown:
            raise SpecError(
                "data.features",
                f"{unknown} are not inputs of the model (inputs: {inputs})",
                "key data.features by the model's input names",
            )
        missing = [i for i in inputs if i not in data_spec.features]
        if missing:
            raise SpecError(
                "data.features",
                f"model inputs {missing} have no columns",
                f"add them, e.g. data.features.{missing[0]}: [column, ...]",
            )
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
    result = Plan(
        features=features,
        labels=labels,
        sample_weight=data_spec.sample_weight,
        io=io,
        drop_missing=data_spec.missing == "drop",
        na_values=tuple(data_spec.na_values),
    )
    if result.sample_weight and result.sample_weight not in train.columns:
        raise SpecError(
            "data.sample_weight",
            f"column {result.sample_weight!r} is not in "
            f"{train.field} files (they hold {sorted(train.columns)})",
            "fix the column name",
        )
    _check_spec_columns(data_spec, result, train)
    for source in sources:
        _check_source(for_source(result, source), source)
    result = replace(result, types=_column_types(data_spec, result, sources))
    result = replace(result, decode=_image_columns(data_spec, result, sources))
    result = replace(
        result,
        varlen=frozenset(
            c for s in sources for c in result.columns() if c in s.columns and s.columns[c].varlen
        )
        | _variable_inputs(result, sources),
    )
    _check_varlen(result)
    result = replace(result, vocabulary=_vocabularies(data_spec, result, record))
    return replace(result, fills=_fills(data_spec, result, record))


def _check_spec_columns(data_spec, p: Plan, train: Source):
    """Every column named by data.columns, data.missing and data.decode is a used column."""
    used = p.columns()
    named = [("data.columns", list(data_spec.columns)), ("data.decode", list(data_spec.decode))]
    if isinstance(data_spec.missing, dict):
        named.append(("data.missing", list(data_spec.missing)))
    for where, columns in named:
        for c in columns:
            if c not in used:
                raise SpecError(
                    f"{where}.{c}",
                    f"{c!r} is not a column the job reads (it reads {used})",
                    "fix the column name",
                )
    if isinstance(data_spec.missing, dict):
        for c in data_spec.missing:
            if c in p.label_columns():
                raise SpecError(
                    f"data.missing.{c}",
                    "a missing label cannot be filled",
                    "use data.missing: drop, or fix the file",
                )


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
                raise SpecError(
                    "data.labels",
                    f"{key!r} is not an output of the model (outputs: {io.output_keys})",
                    "key data.labels by output names",
                )
            by_name[name] = _as_list(cols)
        missing = [o for o in outputs if o not in by_name]
        if missing:
            raise SpecError(
                "data.labels",
                f"outputs {missing} have no label columns",
                "give one entry per model output",
            )
        return by_name
    if len(outputs) != 1:
        raise SpecError(
            "data.labels",
            f"the model has {len(outputs)} outputs {io.output_keys}",
            "give data.labels as a mapping output -> column(s)",
        )
    return {outputs[0]: _as_list(spec_labels)}


def _check_source(p: Plan, source: Source) -> None:
    for c in p.columns():
        col = source.columns.get(c)
        if col is not None and col.dtype == "unreadable":
            what, fix = col.text_at
            raise SpecError(
                _where_fed(p, c),
                f"column {c!r} of {source.field} files is {what}, which k2e does not read",
                fix,
            )
    for where, mapping in (("data.features", p.features), ("data.labels", p.labels)):
        for key, cols in mapping.items():
            missing = [c for c in cols if c not in source.columns]
            if missing:
                raise SpecError(
                    f"{where}.{key}",
                    f"columns {missing} are not in {source.field} files "
                    f"(they hold {sorted(source.columns)})",
                    "fix the column names",
                )
    for name, cols in p.features.items():
        shape, _ = p.io.inputs[name]
        if any(source.columns[c].varlen for c in cols) or len(shape) > 1:
            continue  # padded to the input's width, or decoded images: checked later
        width = sum(int(np.prod(source.columns[c].shape)) for c in cols)
        expected = int(np.prod(shape)) if all(d is not None for d in shape) else None
        if expected is not None and width != expected:
            raise SpecError(
                f"data.features.{name}",
                f"columns {cols if len(cols) < 8 else str(len(cols)) + ' columns'} "
                f"give {width} values per example but the model input has shape "
                f"{list(shape)} ({expected} values)",
                "map exactly that many values",
            )


def _column_types(data_spec, p: Plan, sources) -> dict:
    """How each used column is read: declared, else what its input takes, else as it looks."""
    types = {}
    wants = {
        c: _kind_of_dtype(p.io.inputs[name][1]) for name, cols in p.features.items() for c in cols
    }
    for c in p.columns():
        declared = data_spec.columns.get(c)
        for source in sources:
            if c not in source.columns:
                continue
            stored = source.columns[c]
            if (
                declared
                and formats.of(source.format).TYPED
                and (declared == "string") != (stored.dtype == "string")
            ):
                raise SpecError(
                    f"data.columns.{c}",
                    f"{source.field} files store {c!r} as "
                    f"{stored.dtype}, which cannot be read as {declared}",
                    "remove the declaration, or write the column with that type",
                )
        stored = sources[0].columns[c]
        kind = declared or wants.get(c) or stored.dtype
        if c in _given_vocabulary(data_spec, p):
            kind = "string"
        if c == p.sample_weight:
            kind = "float"
        if c in data_spec.decode:
            kind = "string"
        if kind != "string" and not declared:
            for source in sources:
                col = source.columns.get(c)
                if col is not None and col.dtype == "string" and c not in data_spec.decode:
                    where = _where_fed(p, c)
                    seen = f" (line {col.text_at[0]}: {col.text_at[1]!r})" if col.text_at else ""
                    raise SpecError(
                        where,
                        f"column {c!r} of {source.field} files holds text{seen} "
                        f"but is read as {kind}",
                        f"feed it to a tf.string input, or declare data.columns.{c}: "
                        "string (or fix the file)",
                    )
        types[c] = kind
    return types


def _given_vocabulary(data_spec, p: Plan) -> dict:
    """label column -> class names given by data.label_vocabulary (a list: the one label's)."""
    given = data_spec.label_vocabulary
    if isinstance(given, list):
        return {p.label_columns()[0]: given} if len(p.label_columns()) == 1 else {}
    return given or {}


def _where_fed(p: Plan, column: str) -> str:
    for name, cols in p.features.items():
        if column in cols:
            return f"data.features.{name}"
    if column == p.sample_weight:
        return "data.sample_weight"
    for name, cols in p.labels.items():
        if column in cols:
            return f"data.labels.{name}" if len(p.labels) > 1 else "data.labels"
    return f"data.columns.{column}"


def _image_columns(data_spec, p: Plan, sources) -> dict:
    decode = {}
    for c, how in data_spec.decode.items():
        inputs = [name for name, cols in p.features.items() if c in cols]
        if not inputs or p.features[inputs[0]] != [c]:
            raise SpecError(
                f"data.decode.{c}",
                "an image column must feed one model input on its own",
                f"map it alone, e.g. data.features.image: {c}",
            )
        shape, _ = p.io.inputs[inputs[0]]
        if len(shape) != 3:
            raise SpecError(
                f"data.decode.{c}",
                f"input {inputs[0]!r} has shape {list(shape)}, not [height, width, channels]",
                "decode images into an image input",
            )
        for source in sources:
            if source.columns[c].dtype != "string":
                raise SpecError(
                    f"data.decode.{c}",
                    f"{source.field} files hold {c!r} as "
                    f"{source.columns[c].dtype}, not encoded image bytes",
                    "store PNG/JPEG bytes in a bytes_list (or drop data.decode)",
                )
        if how.resize is None and any(d is None for d in shape[:2]):
            raise SpecError(
                f"data.decode.{c}.resize",
                f"input {inputs[0]!r} has no fixed size ({list(shape)})",
                "give resize: [height, width]",
            )
        decode[c] = how
    return decode


def _variable_inputs(p: Plan, sources) -> frozenset:
    """List columns that feed a ragged or (None,) input alone: read as variable-length even
    where the records read to tell the types happen to have one length."""
    columns = set()
    for name, cols in p.features.items():
        shape, _ = p.io.inputs[name]
        if (
            len(cols) == 1
            and len(shape) == 1
            and (shape[0] is None or name in p.io.ragged)
            and all(formats.of(s.format).LISTS for s in sources)
        ):
            columns.add(cols[0])
    return frozenset(columns)


def _check_varlen(p: Plan) -> None:
    for name, cols in p.features.items():
        if any(c in p.varlen for c in cols) and len(cols) > 1:
            raise SpecError(
                f"data.features.{name}",
                f"column(s) {[c for c in cols if c in p.varlen]}"
                " vary in length between records and cannot be stacked with others",
                "feed a variable-length feature to an input of its own",
            )
        shape, _ = p.io.inputs[name]
        if any(c in p.varlen for c in cols) and len(shape) != 1:
            raise SpecError(
                f"data.features.{name}",
                f"{cols[0]!r} varies in length between "
                f"records but input {name!r} has shape {list(shape)}",
                "feed it to a 1-D input: Input(shape=(N,)) pads to N, "
                "Input(shape=(None,)) to the longest in each batch, "
                "Input(shape=(None,), ragged=True) keeps each row's length",
            )
    for name in p.io.ragged:
        if not any(c in p.varlen for c in p.features[name]):
            raise SpecError(
                f"data.features.{name}",
                f"input {name!r} is ragged but its column "
                f"{p.features[name][0]!r} has one length in every record",
                "feed a variable-length TFRecord feature, or use a dense input",
            )
    for c in p.label_columns():
        if c in p.varlen:
            raise SpecError(
                _where_fed(p, c),
                f"label {c!r} varies in length between records",
                "write labels of one length",
            )


def _vocabularies(data_spec, p: Plan, record: dict | None) -> dict:
    """Text label columns -> class names: given, recorded in model_dir, or None (the scan of
    the training data fills it in)."""
    text = [c for c in p.label_columns() if p.types[c] == "string"]
    given = data_spec.label_vocabulary
    if isinstance(given, list):
        if len(p.label_columns()) != 1:
            raise SpecError(
                "data.label_vocabulary",
                f"the job has label columns {p.label_columns()}",
                "give label column -> class names",
            )
        given = {p.label_columns()[0]: given}
    given = given or {}
    for c in given:
        if c not in p.label_columns():
            raise SpecError(
                f"data.label_vocabulary.{c}",
                f"{c!r} is not a label column (labels: {p.label_columns()})",
                "key it by the label column",
            )
    recorded = (record or {}).get("label_vocabulary") or {}
    vocabulary = {}
    for c in text:
        names = given.get(c) or recorded.get(c)
        if names is not None and len(set(names)) != len(names):
            raise SpecError(f"data.label_vocabulary.{c}", "lists a class twice", "list each once")
        output = p.output_of(c)
        kind, classes = p.io.label_kinds[output]
        if kind == "value" or len(p.labels[output]) > 1:
            raise SpecError(
                _where_fed(p, c),
                f"label column {c!r} holds text but output "
                f"{output!r} is not a classifier (its loss takes numbers)",
                "compile the output with a categorical or binary cross-entropy, or "
                "encode the labels as numbers",
            )
        if names is not None and classes and len(names) != classes:
            raise SpecError(
                f"data.label_vocabulary.{c}",
                f"has {len(names)} classes but output {output!r} has {classes}",
                "give one name per class",
            )
        vocabulary[c] = list(names) if names is not None else None
    return vocabulary


def _fills(data_spec, p: Plan, record: dict | None) -> dict:
    recorded = (record or {}).get("fills") or {}
    fills = {}
    for c in p.columns():
        fill = data_spec.fill_of(c)
        if fill is None:
            continue
        how, value = fill
        kind = p.types[c]
        if how == "constant":
            try:
                fills[c] = cast_value(value, kind)
            except ValueError:
                raise SpecError(
                    f"data.missing.{c}", f"fill {value!r} is not a {kind}", f"give a {kind} value"
                ) from None
        elif how in ("mean", "median") and kind == "string":
            raise SpecError(
                f"data.missing.{c}",
                f"{c!r} holds text; it has no {how}",
                "use most_frequent or a constant",
            )
        elif c in p.decode:
            raise SpecError(
                f"data.missing.{c}", "an image column cannot be filled", "use data.missing: drop"
            )
        else:
            fills[c] = recorded[c] if c in recorded else Statistic(how)
    return fills


def cast_value(value, kind):
    if kind == "string":
        return str(value)
    if kind == "int":
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        return int(value)
    return float(value)


class Statistic(str):
    """A fill still to be computed from the training data: 'mean', 'median', 'most_frequent'."""


def pending(p: Plan) -> list:
    """Columns whose vocabulary or fill value waits for the training data's scan."""
    return [c for c, v in p.vocabulary.items() if v is None] + [
        c for c, v in p.fills.items() if isinstance(v, Statistic)
    ]


def load_record(model_dir: str) -> dict | None:
    path = os.path.join(model_dir, KERAS_DIR, RECORD_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def save_record(model_dir: str, p: Plan) -> None:
    os.makedirs(os.path.join(model_dir, KERAS_DIR), exist_ok=True)
    with open(os.path.join(model_dir, KERAS_DIR, RECORD_FILE), "w") as f:
        json.dump(p.record(), f, indent=1, sort_keys=True)
