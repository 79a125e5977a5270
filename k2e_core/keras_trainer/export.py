"""SavedModel export on Keras 3, in TF Serving's layout, with the signatures the Estimator
trainer writes for the same spec: what a client sends (one tensor per input, or serialized
tf.Examples) goes through the input pipeline's own `model_inputs` (fills, image decoding)
into the model; `classification` and `regression` heads on tf.Example input carry TF
Serving's classify and regress method names (`inputs` in; `classes`/`scores`, `outputs`
out), which TF2's SavedModel writer cannot set (it names every signature predict:
tensorflow/tensorflow#38081), so they are set in saved_model.pb after it is written."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile

from k2e_core import signatures
from k2e_core.errors import ExportMismatch, SpecError
from k2e_core.inputs.formats.files import pad_to
from k2e_core.inputs.pipeline import model_inputs
from k2e_core.keras_trainer import model as keras_model
from k2e_core.tf_runtime import tf

log = logging.getLogger("k2e.export")

SERVING_DEFAULT = "serving_default"


def heads(export_outputs, io, model) -> list[tuple[str, str, str | None]]:
    """[(signature name, kind, output key or None for every output)] of the spec's
    `model.export_outputs` (default: serving_default predicting every output)."""
    if not export_outputs:
        return [(SERVING_DEFAULT, "predict", None)]
    keys = io.output_keys
    found = []
    for name, head in export_outputs.items():
        key = head.output or name
        if key in keys:
            pass
        elif key in keras_model.output_names(model):
            key = keys[keras_model.output_names(model).index(key)]
        elif name == SERVING_DEFAULT and len(keys) == 1:
            key = keys[0]
        elif name == SERVING_DEFAULT and head.kind == "predict":
            key = None
        else:
            raise SpecError(
                f"model.export_outputs.{name}",
                f"{key!r} is not an output of the model",
                f"use one of {keys}",
            )
        found.append((name, head.kind, key))
    if SERVING_DEFAULT not in {h[0] for h in found}:
        found.insert(0, (SERVING_DEFAULT, "predict", None))
    return found


class _Serving:
    """The model behind every signature: features as a client sends them -> predictions
    {output key: tensor, and `class`/`<key>_class` for text labels}."""

    def __init__(self, model, io, plan, class_names):
        self.model, self.io, self.plan = model, io, plan
        self.class_names = class_names or {}
        self.to_model = keras_model.positional(model, list(io.inputs))

    def predictions(self, features: dict) -> dict:
        if self.plan is not None:
            features = model_inputs(self.plan, features)
        out = keras_model.predictions(
            self.model, self.model(self.to_model(features), training=False)
        )
        keys = self.io.output_keys
        for key, names in self.class_names.items():
            out[signatures.predicted_class_key(key, keys)] = signatures.predicted_classes(
                out[key], names
            )
        return out

    def head(self, kind, key, examples: bool, features: dict) -> dict:
        out = self.predictions(features)
        if key is None:
            return out
        tensor = out[key]
        if kind == "classification":
            names = self.class_names.get(key)
            if names and tensor.shape[-1] == 1:  # one sigmoid unit: both classes' scores
                tensor = tf.concat([1 - tensor, tensor], axis=-1)
            result = {"scores": tensor}
            if names:
                result["classes"] = signatures.class_table(tensor, names)
            return result
        if kind == "regression":
            return {"outputs": tensor}
        return {key: tensor}

    def raw_spec(self) -> dict:
        specs = {}
        for name, (shape, dtype) in self.io.inputs.items():
            if self.plan is not None and self.plan.features[name][0] in self.plan.decode:
                specs[name] = tf.TensorSpec([None], tf.string, name=name)
            else:
                specs[name] = tf.TensorSpec([None, *shape], tf.as_dtype(dtype), name=name)
        return specs

    def raw_features(self, tensors: dict) -> dict:
        features = dict(tensors)
        for name in self.io.ragged:  # a raw client sends ragged rows padded with 0 ("" for text)
            padding = "" if features[name].dtype == tf.string else 0
            features[name] = tf.RaggedTensor.from_tensor(features[name], padding=padding)
        return features

    def parsed(self, serialized) -> dict:
        spec = signatures.feature_spec(self.io, self.plan)
        features = tf.io.parse_example(serialized, spec)
        for name, parsed in spec.items():
            if isinstance(parsed, tf.io.VarLenFeature):
                features[name] = pad_to(features[name], self.io.inputs[name][0][0])
        return features


def _functions(serving: _Serving, found, examples: bool) -> tuple[dict, dict]:
    """({signature name: concrete function}, {signature name: kind of method})."""
    functions, methods = {}, {}
    for name, kind, key in found:
        typed = examples and kind in ("classification", "regression")
        if examples:
            arg = "inputs" if typed else "examples"
            spec = tf.TensorSpec([None], tf.string, name=arg)

            def serve(serialized, kind=kind, key=key):
                return serving.head(kind, key, True, serving.parsed(serialized))

        else:
            spec = serving.raw_spec()

            def serve(tensors, kind=kind, key=key):
                return serving.head(kind, key, False, serving.raw_features(tensors))

        functions[name] = tf.function(serve, input_signature=[spec]).get_concrete_function()
        methods[name] = kind if typed else "predict"
    return functions, methods


def set_method_names(saved_model_dir: str, methods: dict) -> None:
    """Gives each signature TF Serving's method name for its kind."""
    from tensorflow.core.protobuf import saved_model_pb2

    path = os.path.join(saved_model_dir, "saved_model.pb")
    saved = saved_model_pb2.SavedModel()
    with open(path, "rb") as f:
        saved.ParseFromString(f.read())
    for meta_graph in saved.meta_graphs:
        for name, kind in methods.items():
            meta_graph.signature_def[name].method_name = signatures.METHOD_NAMES[kind]
    with open(path, "wb") as f:
        f.write(saved.SerializeToString())


def export_verified(
    model, io, plan, export_spec, export_outputs, class_names, sample, step: int
) -> tuple[str, dict]:
    """The model's current weights as a SavedModel in a local staging directory
    (<staging>/<step>), checked against the Keras model on `sample` (rows as a client sends
    them, the same rows as the model sees them). The caller publishes and removes it."""
    found = heads(export_outputs, io, model)
    examples = export_spec.serving_input == "tf_example"
    serving = _Serving(model, io, plan, class_names)
    staging = tempfile.mkdtemp(prefix="k2e-export-")
    path = os.path.join(staging, str(step))
    try:
        functions, methods = _functions(serving, found, examples)
        root = tf.Module()
        root.model = model
        tf.saved_model.save(root, path, signatures=functions)
        set_method_names(path, methods)
        loaded = tf.saved_model.load(path)
        names = sorted(loaded.signatures.keys())
        missing = [name for name, _, _ in found if name not in names]
        if missing:
            raise ExportMismatch(f"export: heads {missing} did not become signatures ({names})")
        report = {"signatures": names}
        if export_spec.verify_rows and sample is not None:
            sent, seen = sample
            rows = {k: v[: export_spec.verify_rows] for k, v in seen.items()}
            expected = keras_model.predictions(model, model(serving.to_model(rows), training=False))
            expected = {k: v.numpy() for k, v in expected.items()}
            report.update(signatures.verify(loaded, found, sent, expected, export_spec))
        return path, report
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
