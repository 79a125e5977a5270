"""SavedModel export: serving signatures from the Keras model's inputs, verified before publish."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile

from k2e_core import signatures
from k2e_core.errors import ExportMismatch, SpecError
from k2e_core.estimator.compat import tf
from k2e_core.estimator.keras_copies import keras_model_at
from k2e_core.estimator.model_fn import export_heads

log = logging.getLogger("k2e.export")

HEAD_KINDS = {
    "predict": tf.estimator.export.PredictOutput,
    "classification": tf.estimator.export.ClassificationOutput,
    "regression": tf.estimator.export.RegressionOutput,
}


KIND_OF = {cls: kind for kind, cls in HEAD_KINDS.items()}


def export_outputs_from_spec(heads_spec):
    """The spec's `model.export_outputs` as convert()'s {name: (ExportOutput class, output)}."""
    if not heads_spec:
        return None
    return {name: (HEAD_KINDS[h.kind], h.output or name) for name, h in heads_spec.items()}


def serving_input_fn(io, kind: str, plan=None):
    """The serving receiver: what a client sends (tf.Examples, or one tensor per input, with
    encoded images as bytes) through the input pipeline's own `model_inputs`."""
    from k2e_core.inputs.formats.files import pad_to
    from k2e_core.inputs.pipeline import model_inputs

    def transform(features):
        return model_inputs(plan, features) if plan is not None else features

    if kind == "tf_example":
        spec = signatures.feature_spec(io, plan)

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
        names = sorted(loaded.signatures.keys())
        return path, {"signatures": names, **verify(loaded, names)}
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

    def verify(loaded, names) -> dict:
        heads = export_heads(keras_model, io.output_keys, export_outputs)
        missing = [name for name, _, _ in heads if name not in names]
        if missing:
            raise ExportMismatch(f"export: heads {missing} did not become signatures (got {names})")
        if not export_spec.verify_rows or sample_features is None:
            return {}
        trained = keras_model_at(keras_model, estimator.latest_checkpoint(), checkpoint_format)
        sent, seen = sample_features
        expected = trained.predict(
            {k: v[: export_spec.verify_rows] for k, v in seen.items()}, verbose=0
        )
        if not isinstance(expected, dict):
            expected = expected if isinstance(expected, list) else [expected]
            expected = dict(zip(io.output_keys, expected))
        kinds = [(name, KIND_OF[cls], key) for name, cls, key in heads]
        return signatures.verify(loaded, kinds, sent, expected, export_spec)

    return exported(estimator, serving_input_fn(io, export_spec.serving_input, plan), verify)


def cleanup(local_dir: str) -> None:
    shutil.rmtree(os.path.dirname(local_dir.rstrip("/")), ignore_errors=True)
