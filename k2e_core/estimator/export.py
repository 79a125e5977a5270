"""SavedModel export: serving signatures from the Keras model's inputs, verified before publish."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile

import numpy as np

from k2e_core.errors import ExportMismatch, SpecError
from k2e_core.estimator.compat import tf
from k2e_core.estimator.conversion import export_heads, keras_model_at

log = logging.getLogger("k2e.export")

HEAD_KINDS = {
    "predict": tf.estimator.export.PredictOutput,
    "classification": tf.estimator.export.ClassificationOutput,
    "regression": tf.estimator.export.RegressionOutput,
}


def export_outputs_from_spec(heads_spec):
    """The spec's `model.export_outputs` as convert()'s {name: (ExportOutput class, output)}."""
    if not heads_spec:
        return None
    return {name: (HEAD_KINDS[h.kind], h.output or name) for name, h in heads_spec.items()}


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


def serving_input_fn(io, kind: str, plan=None):
    """The serving receiver: what a client sends (tf.Examples, or one tensor per input, with
    encoded images as bytes) through the input pipeline's own `model_inputs`."""
    from k2e_core.estimator.formats.files import pad_to
    from k2e_core.estimator.pipeline import model_inputs

    def transform(features):
        return model_inputs(plan, features) if plan is not None else features

    if kind == "tf_example":
        spec = feature_spec(io, plan)

        def examples():
            serialized = tf.compat.v1.placeholder(tf.string, [None], name="input_example_tensor")
            features = tf.io.parse_example(serialized, spec)
            for name, parsed in spec.items():
                if isinstance(parsed, tf.io.VarLenFeature):
                    features[name] = pad_to(features[name], io.inputs[name][0][0])
            return tf.estimator.export.ServingInputReceiver(
                transform(features), {"examples": serialized}
            )

        return examples

    def raw():
        tensors = {}
        for name, (shape, dtype) in io.inputs.items():
            if plan is not None and plan.features[name][0] in plan.decode:
                tensors[name] = tf.compat.v1.placeholder(tf.string, [None], name=name)
            else:
                tensors[name] = tf.compat.v1.placeholder(
                    tf.as_dtype(dtype), [None, *shape], name=name
                )
        features = dict(tensors)
        for name in io.ragged:  # a raw client sends ragged rows padded with 0 ("" for text)
            padding = "" if features[name].dtype == tf.string else 0
            features[name] = tf.RaggedTensor.from_tensor(features[name], padding=padding)
        return tf.estimator.export.ServingInputReceiver(transform(features), tensors)

    return raw


def exported(estimator, serving_input_receiver_fn, verify) -> tuple[str, dict]:
    """Exports the latest checkpoint to a local staging directory, then `verify(loaded
    SavedModel, signature names) -> report`. Returns (local SavedModel dir, report); the
    caller publishes and removes it (`cleanup`). A failed check removes it here."""
    if not estimator.latest_checkpoint():
        raise SpecError(
            "model_dir",
            f"{estimator.model_dir} holds no trained checkpoint",
            "run the train step first",
        )
    staging = tempfile.mkdtemp(prefix="k2e-export-")
    try:
        path = estimator.export_saved_model(staging, serving_input_receiver_fn).decode()
        loaded = tf.saved_model.load(path)
        signatures = sorted(loaded.signatures.keys())
        return path, {"signatures": signatures, **verify(loaded, signatures)}
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def export_verified(
    estimator,
    keras_model,
    io,
    export_spec,
    export_outputs,
    sample_features,
    checkpoint_format="checkpoint",
    plan=None,
) -> tuple[str, dict]:
    """Exports (`exported`) and checks the SavedModel predicts what Keras predicts.
    `sample_features`: (rows as a client sends them, the same rows as the model sees them)."""

    def verify(loaded, signatures) -> dict:
        heads = export_heads(keras_model, io.output_keys, export_outputs)
        missing = [name for name, _, _ in heads if name not in signatures]
        if missing:
            raise ExportMismatch(
                f"export: heads {missing} did not become signatures (got {signatures})"
            )
        if not export_spec.verify_rows or sample_features is None:
            return {}
        trained = keras_model_at(keras_model, estimator.latest_checkpoint(), checkpoint_format)
        return _verify(loaded, trained, io, heads, sample_features, export_spec)

    return exported(estimator, serving_input_fn(io, export_spec.serving_input, plan), verify)


def _row_count(features) -> int:
    first = next(iter(features.values()))
    return int(first.nrows()) if isinstance(first, tf.RaggedTensor) else len(first)


def serialized_examples(features: dict) -> list[bytes]:
    """{feature: rows} as serialized tf.train.Examples, one per row (integers as int64_list,
    floats as float_list, anything else as bytes_list)."""
    rows = _row_count(features)
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


def _verify(loaded, trained, io, heads, features, export_spec) -> dict:
    sent, seen = features
    rows = {k: v[: export_spec.verify_rows] for k, v in sent.items()}
    expected = trained.predict(
        {k: v[: export_spec.verify_rows] for k, v in seen.items()}, verbose=0
    )
    if not isinstance(expected, dict):
        expected = expected if isinstance(expected, list) else [expected]
        expected = dict(zip(io.output_keys, expected))
    worst = 0.0
    for name, cls, key in heads:
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
        pairs = _pairs(cls, key, got, expected)
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
        _row_count(rows),
        len(heads),
        worst,
    )
    return {"verified_rows": _row_count(rows), "max_abs_diff": worst}


def _pairs(cls, key, got, expected):
    got = {k: v.numpy() for k, v in got.items()}
    if key is None:
        return [(k, got[k], expected[k]) for k in expected]
    if cls is tf.estimator.export.ClassificationOutput:
        return [("scores", got["scores"], expected[key])]
    if cls is tf.estimator.export.RegressionOutput:
        return [("outputs", got["outputs"], expected[key])]
    return [(key, got[key], expected[key])]


def cleanup(local_dir: str) -> None:
    shutil.rmtree(os.path.dirname(local_dir.rstrip("/")), ignore_errors=True)
