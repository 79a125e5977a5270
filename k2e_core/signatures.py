"""The serving side both trainers share: tf.Example parsing specs for the model's inputs,
rows as serialized tf.Examples, TF Serving's method names, and the check that a SavedModel's
signatures predict what the Keras model predicts."""

from __future__ import annotations

import logging

import numpy as np

from k2e_core.errors import ExportMismatch, SpecError
from k2e_core.tf_runtime import tf

log = logging.getLogger("k2e.export")

#: TF Serving's method name of each kind of signature (its Classify and Regress APIs refuse
#: another).
METHOD_NAMES = {
    "predict": "tensorflow/serving/predict",
    "classification": "tensorflow/serving/classify",
    "regression": "tensorflow/serving/regress",
}


def feature_spec(io, plan=None) -> dict:
    """tf.Example parsing spec for the model's inputs: encoded images as bytes, inputs fed
    by variable-length features as VarLenFeatures, filled inputs with the fill as default."""
    spec = {}
    for name, (shape, dtype) in io.inputs.items():
        columns = plan.features[name] if plan else [name]
        dtype = tf.as_dtype(dtype)
        base = tf.string if dtype == tf.string else tf.int64 if dtype.is_integer else tf.float32
        if plan and columns[0] in plan.decode:
            spec[name] = tf.io.FixedLenFeature([], tf.string)
            continue
        if plan and columns[0] in plan.varlen:
            spec[name] = (
                tf.io.RaggedFeature(base) if name in io.ragged else tf.io.VarLenFeature(base)
            )
            continue
        if any(d is None for d in shape):
            raise SpecError(
                "export.serving_input",
                f"input {name!r} has shape {list(shape)} with unknown dimensions",
                "use serving_input: raw for variable-size inputs",
            )
        fills = [plan.fills.get(c) for c in columns] if plan else [None]
        default = None
        if all(f is not None for f in fills) and int(np.prod(shape)) == len(fills):
            default = np.reshape(
                np.asarray(fills, base.as_numpy_dtype if base != tf.string else object), shape
            ).tolist()
        spec[name] = tf.io.FixedLenFeature(shape, base, default_value=default)
    return spec


def row_count(features) -> int:
    first = next(iter(features.values()))
    return int(first.nrows()) if isinstance(first, tf.RaggedTensor) else len(first)


def serialized_examples(features: dict) -> list[bytes]:
    """{feature: rows} as serialized tf.train.Examples, one per row (integers as int64_list,
    floats as float_list, anything else as bytes_list)."""
    rows = row_count(features)
    out = []
    for i in range(rows):
        feats = {}
        for name, values in features.items():
            value = np.asarray(values[i]).reshape(-1)
            if value.dtype.kind in "iub":
                feats[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=value.tolist()))
            elif value.dtype.kind == "f":
                feats[name] = tf.train.Feature(float_list=tf.train.FloatList(value=value.tolist()))
            else:
                text = [v if isinstance(v, bytes) else str(v).encode() for v in value]
                feats[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=text))
        out.append(tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString())
    return out


def verify(loaded, heads, sent: dict, expected: dict, export_spec) -> dict:
    """Checks each head's signature of the `loaded` SavedModel on the rows a client sends
    (`sent`, as many as export.verify_rows) against the Keras model's `expected`
    {output key: predictions} for the same rows. `heads`: [(signature, kind, output key or
    None for every output)]. Raises ExportMismatch, naming signature and output."""
    rows = {k: v[: export_spec.verify_rows] for k, v in sent.items()}
    worst = 0.0
    for name, kind, key in heads:
        fn = loaded.signatures[name]
        arg_names = list(fn.structured_input_signature[1])
        if export_spec.serving_input == "tf_example":
            got = fn(**{arg_names[0]: tf.constant(serialized_examples(rows))})
        else:
            got = fn(
                **{
                    k: rows[k].to_tensor()
                    if isinstance(rows[k], tf.RaggedTensor)
                    else tf.constant(rows[k])
                    for k in arg_names
                }
            )
        pairs = _pairs(kind, key, got, expected)
        for out_name, actual, want in pairs:
            actual = np.asarray(actual).reshape(np.shape(want))
            diff = float(np.max(np.abs(actual - want))) if np.size(want) else 0.0
            worst = max(worst, diff)
            if not np.allclose(actual, want, atol=export_spec.atol, rtol=export_spec.rtol):
                raise ExportMismatch(
                    f"export: signature {name!r} output {out_name!r} differs from the Keras model "
                    f"by up to {diff:.3g} on {len(want)} rows (atol {export_spec.atol}); "
                    "nothing was published"
                )
    log.info(
        "verified %d rows on %d signature(s): max |SavedModel - Keras| = %.2e",
        row_count(rows),
        len(heads),
        worst,
    )
    return {"verified_rows": row_count(rows), "max_abs_diff": worst}


def _pairs(kind, key, got, expected):
    got = {k: v.numpy() for k, v in got.items()}
    if key is None:
        return [(k, got[k], expected[k]) for k in expected]
    if kind == "classification":
        return [("scores", got["scores"], expected[key])]
    if kind == "regression":
        return [("outputs", got["outputs"], expected[key])]
    return [(key, got[key], expected[key])]


def predicted_class_key(key, output_keys):
    """Where predictions carry a text-label output's class names."""
    return "class" if len(output_keys) == 1 else f"{key}_class"


def predicted_classes(scores, names):
    """The name of each row's most likely class ([batch] strings); one unit: above 0.5."""
    if scores.shape[-1] == 1:
        index = tf.cast(tf.reshape(scores, [-1]) > 0.5, tf.int64)
    else:
        index = tf.argmax(scores, axis=-1)
    return tf.gather(tf.constant(names), index)


def class_table(scores, names):
    """ClassificationOutput's classes: every class name, for every row."""
    rows = tf.shape(scores)[0]
    return tf.tile(tf.constant(names)[None, :], [rows, 1])
