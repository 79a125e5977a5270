"""Input pipelines over the files a data plan maps (k2e_core.inputs.data): every format runs

    records -> [shard] -> [cache] -> [shuffle] -> repeat -> batch -> vectorised parse
    -> [drop rows with missing values] -> columns -> (features, labels) -> model_inputs -> prefetch

`model_inputs` (fills for missing values, image decoding) is the one step the exported
serving signatures apply too, so training and serving never see different inputs.
"""

from __future__ import annotations

import contextlib
import re

import numpy as np

from k2e_core.errors import SpecError, first_line
from k2e_core.inputs import formats
from k2e_core.inputs.data import Plan, Source, for_source
from k2e_core.inputs.formats import INT_MISSING
from k2e_core.tf_runtime import tf

AUTOTUNE = tf.data.AUTOTUNE


def input_fn(
    p: Plan,
    source: Source,
    data_spec,
    training: bool,
    seed=None,
    batch_size=None,
    shard: tuple[int, int] | None = None,
    example=None,
):
    """An Estimator input_fn over `source` following plan `p`. `shard`: (index, count) of
    this worker: it reads whole files when there are enough of them, else every count-th
    record, and shuffles with a seed of its own. `example`: (plan, a batch of columns) ->
    (features, labels); default: the model's inputs and labels."""
    batch = batch_size or data_spec.batch_size
    to_example = example or _example
    p = for_source(p, source)
    if shard and seed is not None:
        seed = seed + shard[0]

    def fn():
        shuffled = training and bool(data_spec.shuffle_buffer)
        records, parse = _records(p, source, data_spec.parallel_reads, shard, shuffled, seed)
        dropped = dropped_rows_counter() if training and p.drop_missing else None
        fn.dropped_rows = dropped
        ds = records
        if data_spec.cache and training:
            ds = ds.cache()
        if training and data_spec.shuffle_buffer:
            ds = ds.shuffle(data_spec.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        if training:
            ds = ds.repeat()
        ds = ds.batch(batch, drop_remainder=False)
        ds = ds.map(
            lambda r: to_example(p, _columns(p, parse, r, dropped)),
            num_parallel_calls=AUTOTUNE,
            deterministic=not training,
        )
        if p.drop_missing:
            ds = ds.filter(lambda features, labels: tf.size(tf.nest.flatten(labels)[0]) > 0)
        prefetch = AUTOTUNE if data_spec.prefetch == "auto" else data_spec.prefetch
        return ds.prefetch(prefetch) if prefetch else ds

    return fn


def shard_of(source: Source, shard):
    """(files this worker reads, record shard or None)."""
    if not shard or shard[1] <= 1:
        return source.files, None
    index, count = shard
    if len(source.files) >= count:
        return source.files[index::count], None
    return source.files, (count, index)


def _records(p: Plan, source: Source, parallel_reads: int, shard=None, shuffled=False, seed=None):
    """(record dataset, batched-records -> {column: tensor}) for the source's format. Files
    are read `parallel_reads` at a time, a record of each in turn, in an order shuffled each
    epoch when `shuffled`."""
    files, record_shard = shard_of(source, shard)
    return formats.of(source.format).records(
        p, source, files, parallel_reads, shuffled, seed, record_shard
    )


def _columns(p: Plan, parse, batch, dropped=None) -> dict:
    """A batch of records as columns, without the rows that miss a value (missing: drop),
    counted in `dropped` (a variable) when given."""
    cols = parse(batch)
    return _drop_missing(p, cols, dropped) if p.drop_missing else cols


#: The local variable counting the rows training dropped (missing: drop); read by
#: `training.DroppedRows`.
DROPPED_ROWS = "k2e_dropped_rows"


def dropped_rows_counter():
    """The count of dropped rows: a graph's local variable (the Estimator's), or in eager
    execution (the Keras trainer) a variable the input_fn keeps as its `dropped_rows`."""
    if tf.executing_eagerly():
        return tf.Variable(0, dtype=tf.int64, trainable=False, name=DROPPED_ROWS)
    return tf.compat.v1.get_local_variable(
        DROPPED_ROWS,
        shape=[],
        dtype=tf.int64,
        initializer=tf.compat.v1.zeros_initializer(),
        use_resource=True,
    )


def _example(p: Plan, cols: dict):
    """One batch of columns as (features, labels), model inputs filled and decoded."""
    features = model_inputs(p, stacked_inputs(p, cols))
    labels = {name: _label(p, name, columns, cols) for name, columns in p.labels.items()}
    labels = labels[p.io.outputs[0]] if len(labels) == 1 else labels
    if p.sample_weight:
        return {
            "features": features,
            "sample_weights": tf.cast(cols[p.sample_weight], tf.float32),
        }, labels
    return features, labels


def _drop_missing(p: Plan, cols: dict, dropped=None) -> dict:
    rows = tf.shape(next(iter(cols.values())))[0]
    missing = tf.zeros([rows], tf.bool)
    for t in cols.values():
        if t.dtype.is_floating:
            marked = tf.logical_not(tf.math.is_finite(t))
        elif t.dtype == tf.string:
            marked = (
                tf.reduce_any(tf.equal(t[..., None], list(p.na_values)), axis=-1)
                if p.na_values
                else tf.zeros_like(t, tf.bool)
            )
        else:
            marked = tf.equal(t, INT_MISSING)
        while marked.shape.rank > 1:
            marked = tf.reduce_any(marked, axis=-1)
        missing = missing | marked
    keep = tf.logical_not(missing)
    if dropped is None:
        return {c: tf.boolean_mask(t, keep) for c, t in cols.items()}
    counted = dropped.assign_add(tf.math.count_nonzero(missing, dtype=tf.int64))
    with tf.control_dependencies([counted]):
        return {c: tf.boolean_mask(t, keep) for c, t in cols.items()}


def stacked_inputs(p: Plan, cols: dict) -> dict:
    """Columns stacked into each model input, as a serving client sends them: in the input's
    dtype, except encoded images (bytes) and values still to be filled (NaN, markers)."""
    features = {}
    for name, columns in p.features.items():
        shape, dtype = p.io.inputs[name]
        tensor = gather(cols, columns)
        if columns[0] in p.decode:
            features[name] = tf.reshape(tensor, [-1])
            continue
        if (
            tf.as_dtype(dtype) != tensor.dtype
            and tf.as_dtype(dtype) != tf.string
            and tensor.dtype != tf.string
        ):
            tensor = tf.cast(tensor, dtype)
        if all(d is not None for d in shape):
            tensor = tf.reshape(tensor, [-1, *shape])
        features[name] = tensor
    return features


def model_inputs(p: Plan, features: dict) -> dict:
    """What the model sees for what a client sends: missing values filled, images decoded.
    The input pipeline and every exported serving signature run this same function."""
    out = dict(features)
    for name, columns in p.features.items():
        tensor = features[name]
        if name in p.io.ragged:
            continue
        if columns[0] in p.decode:
            shape, dtype = p.io.inputs[name]
            out[name] = decode_images(tensor, p.decode[columns[0]], shape, dtype)
            continue
        fills = [p.fills.get(c) for c in columns]
        if all(f is None for f in fills):
            continue
        if tensor.dtype == tf.string:
            marked = tf.reduce_any(tf.equal(tensor[..., None], list(p.na_values)), axis=-1)
            out[name] = tf.where(marked, tf.constant(str(fills[0]), tf.string), tensor)
        elif tensor.dtype.is_floating:
            if len(columns) == 1:
                value = tf.constant(np.nan if fills[0] is None else fills[0], tensor.dtype)
            else:
                value = tf.constant([np.nan if f is None else f for f in fills], tensor.dtype)
                value = tf.reshape(value, [1, *tensor.shape[1:]])
            out[name] = tf.where(tf.math.is_finite(tensor), tensor, value + tf.zeros_like(tensor))
    return out


def fill_column(p: Plan, column: str, tensor):
    """One column with its missing values filled (where data.missing fills it)."""
    fill = p.fills.get(column)
    if fill is None:
        return tensor
    if tensor.dtype == tf.string:
        marked = tf.reduce_any(tf.equal(tensor[..., None], list(p.na_values)), axis=-1)
        return tf.where(marked, tf.constant(str(fill), tf.string), tensor)
    if tensor.dtype.is_floating:
        return tf.where(tf.math.is_finite(tensor), tensor, tf.constant(fill, tensor.dtype))
    return tensor  # ints: the parser's default is the fill


def decode_images(encoded, how, shape, dtype):
    """A batch of PNG/JPEG bytes -> [batch, height, width, channels] in the input's dtype
    (pixel values 0-255, as the files hold them: scale inside the model)."""
    height, width, channels = shape
    channels = how.channels or channels or 3
    size = how.resize or [height, width]
    decoder = {"jpeg": tf.io.decode_jpeg, "png": tf.io.decode_png}.get(how.format)

    def one(data):
        if decoder is not None:
            image = decoder(data, channels=channels)
        else:
            image = tf.io.decode_image(data, channels=channels, expand_animations=False)
        image = tf.image.resize(image, size)
        return tf.ensure_shape(image, [*size, channels])

    images = tf.map_fn(
        one,
        tf.reshape(encoded, [-1]),
        fn_output_signature=tf.TensorSpec([*size, channels], tf.float32),
    )
    return tf.cast(images, dtype)


def _label(p: Plan, output: str, columns, cols):
    tensor = gather(cols, columns)
    column = columns[0]
    kind, classes = p.io.label_kinds[output]
    if column not in p.vocabulary:
        if kind != "sparse" and tensor.shape.rank == 1 and p.io.output_units.get(output) == 1:
            return tensor[:, None]  # one unit (binary, regression): labels as [batch, 1]
        return tensor
    names = p.vocabulary[column]
    text = tf.reshape(tensor, [-1])
    hits = tf.equal(text[:, None], tf.constant(names))
    check = tf.debugging.assert_equal(
        tf.reduce_all(tf.reduce_any(hits, axis=1)),
        True,
        message=f"k2e: label column {column!r} holds a value that is not in its vocabulary "
        f"{names[:10]}",
    )
    with tf.control_dependencies([check]):
        ids = tf.argmax(tf.cast(hits, tf.int32), axis=1)
    if kind == "onehot":
        return tf.one_hot(ids, len(names))
    if kind == "binary":
        return tf.cast(ids, tf.float32)[:, None]
    return ids


def gather(cols, columns):
    """The columns as one tensor: a column as it is, several side by side."""
    if len(columns) == 1:
        return cols[columns[0]]
    parts = [cols[c] if cols[c].shape.rank > 1 else cols[c][:, None] for c in columns]
    return tf.concat([tf.cast(t, parts[0].dtype) for t in parts], axis=-1)


def first_batch(p: Plan, source: Source, data_spec, rows: int):
    """The first `rows` examples as numpy (features, labels), in file order."""
    return serving_rows(p, source, data_spec, rows)[1]


def serving_rows(p: Plan, source: Source, data_spec, rows: int):
    """The first `rows` examples, read once, as (features as a serving client sends them:
    before fills and image decoding, (features, labels) as the model sees them)."""
    p = for_source(p, source)
    records, parse = _records(p, source, data_spec.parallel_reads)

    def both(batch):
        cols = _columns(p, parse, batch)
        return stacked_inputs(p, cols), _example(p, cols)

    batch = next(iter(records.batch(rows).map(both).take(1)))
    # ragged inputs stay RaggedTensors (Keras and the signatures take them as they are)
    return tf.nest.map_structure(
        lambda t: t if isinstance(t, tf.RaggedTensor) else t.numpy(), batch
    )


def check_labels_fit(run_loss, p: Plan, source: Source, data_spec) -> None:
    """Runs the compiled loss on one batch (`run_loss(features, labels, sample_weights)`, the
    trainer's) so that a label/loss mismatch fails here, clearly."""
    features, labels = first_batch(p, source, data_spec, min(data_spec.batch_size, 64))
    weights = None
    if for_source(p, source).sample_weight:
        features, weights = features["features"], tf.convert_to_tensor(features["sample_weights"])
    try:
        run_loss(features, tf.nest.map_structure(tf.convert_to_tensor, labels), weights)
    except (ValueError, tf.errors.InvalidArgumentError, TypeError) as err:
        label_shapes = tf.nest.map_structure(lambda a: list(a.shape), labels)
        output_shapes = list(p.io.output_shapes.values())
        raise SpecError(
            "data.labels",
            f"labels of shape {label_shapes} do not fit loss {p.io.loss!r} for outputs of shape "
            f"{output_shapes} ({first_line(err, 200)})",
            "use integer class ids with sparse_categorical_crossentropy, one-hot rows with "
            "categorical_crossentropy, or change data.labels",
        ) from None


# --------------------------------------------------------------------------- errors

_DATA_PROBLEMS = (
    "k2e: ",
    "is required but missing",
    "fields but have",
    "is not a valid",
    "Can't parse serialized",
    "Number of ",
    "values size",
    "could not be found",
    "outside the valid range",
    "Unknown image file format",
    "Invalid PNG",
    "Invalid JPEG",
    "decode",
)


def _data_message(err) -> str | None:
    """The line of a TensorFlow error that says what is wrong with the data (TF puts it after
    the stack of the graph's definition), or None."""
    for line in str(getattr(err, "message", err)).splitlines():
        line = line.strip()
        if any(marker in line for marker in _DATA_PROBLEMS) and not line.startswith(
            ("File ", "[[")
        ):
            return re.sub(r"\s+", " ", line)[:300]
    return None


@contextlib.contextmanager
def named_data_errors(plan: Plan, source: Source):
    """A data error TensorFlow raises mid-run, as one line naming the files and column."""
    try:
        yield
    except tf.errors.OpError as err:
        named = explain(err, plan, source)
        if named is None:
            raise
        raise named from None


def explain(err: Exception, p: Plan, source: Source) -> SpecError | None:
    """A TensorFlow data error from training or evaluation as one line naming the split's
    files and the column; None for errors that are not about the data."""
    text = _data_message(err)
    if text is None:
        return None
    files = (
        source.files[0]
        if len(source.files) == 1
        else f"{len(source.files)} files ({source.files[0]}, ...)"
    )
    if "k2e: " in text:
        problem = text[text.index("k2e: ") + 5 :].rstrip("]' ")
        return SpecError(
            f"{source.field}.files",
            f"{files}: {problem}",
            "check the data with `k2e validate --full`",
        )
    column = formats.of(source.format).column_of(text, p, source)
    if column is None:
        if "label value of" in text and "outside the valid range" in text:
            column = ", ".join(p.label_columns())
        else:
            return None
    where = f" column {column!r}" if column else ""
    text = re.sub(r" in record \d+", "", text)  # TensorFlow counts within a batch, not the file
    return SpecError(
        f"{source.field}.files",
        f"{files}{where}: {text}",
        "check the data with `k2e validate --full` (it names file and line)",
    )
