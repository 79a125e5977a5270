"""Compiled Keras model -> `tf.estimator.Estimator`.

`convert` is a drop-in for `tf.keras.estimator.model_to_estimator` (same parameters, same
ValueErrors) built on the upstream model_fn pieces, without their defects:

* every variable is warm-started from the Keras weights, BatchNorm statistics included;
* the caller's Keras model is never touched: conversion works on a private copy;
* `RunConfig.keep_checkpoint_max` is honoured for object-based checkpoints;
* models loaded from a path keep their metric names;
* `export_outputs` accepts `serving_default` and every head becomes a signature;
* `keras_model_path` is any fsspec URL, in `.keras`, `.h5` or SavedModel format;
* optimizers that cannot be converted faithfully are refused with a clear error;
* a reused `model_dir` never warm-starts from a different model; a fitting Keras checkpoint
  the user saved in `model_dir/keras` is the warm start;
* a partial `metric_names_map` is allowed and predictions use dict-output keys;
* adapted preprocessing layers carry what they learnt into every graph (preprocessing.py);
* evaluation numbers equal Keras `evaluate` whatever the batch size;
* a fitted subclassed model keeps its weights; tf.compat.v1 optimizers and MirroredStrategy
  train.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile

import numpy as np

from k2e_core import storage
from k2e_core.errors import first_line
from k2e_core.estimator import compat, summaries
from k2e_core.estimator.compat import tf
from k2e_core.estimator.preprocessing import clone_layer, copy_weights
from k2e_core.inputs.data import KERAS_DIR
from k2e_core.objects import resolve_custom_objects

log = logging.getLogger("k2e.conversion")

SERVING_DEFAULT = tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY
SINGLE_FEATURE = "feature"  # where ServingInputReceiver puts a single features tensor
FINGERPRINT_FILE = "k2e-model.json"

# What warm-starts from the Keras checkpoint: not the optimizer's variables, not the replica
# copies a MirroredStrategy makes of each variable.
_MODEL_VARIABLES = r"^(?!training/)(?!.*/replica_\d+:)"

# Optimizers whose legacy twin trains identically when the new-only options are unset.
_LEGACY_TWINS = {"SGD", "Adam", "RMSprop", "Adagrad", "Adadelta", "Adamax", "Nadam", "Ftrl"}


def convert(
    keras_model=None,
    keras_model_path=None,
    custom_objects=None,
    model_dir=None,
    config=None,
    checkpoint_format="checkpoint",
    metric_names_map=None,
    export_outputs=None,
    optimizer_state_from=None,
    class_names=None,
    allow_unsafe_deserialization=False,
    output_losses=False,
):
    """Constructs an `Estimator` from a compiled Keras model (or a saved one at any URL).

    k2e's additions: `optimizer_state_from`, a training checkpoint of the same model whose
    optimizer slots (Adam's moments...) seed training when model_dir holds no checkpoint yet;
    `class_names`, {output key: class names} of classifier outputs trained on text labels:
    predictions then carry the predicted name (`<key>_class`, or `class` for one output)
    and classification signatures return the names as their classes;
    `allow_unsafe_deserialization`, load a `keras_model_path` whose Lambda layers hold
    bytecode (refused by default: loading runs it); `output_losses`, a multi-output model's
    evaluation also reports each output's loss (`<output>_loss`), as Keras' evaluate does
    (upstream reports the total alone).
    """
    if keras_model is None and not keras_model_path:
        raise ValueError("Either `keras_model` or `keras_model_path` needs to be provided.")
    if keras_model is not None and keras_model_path:
        raise ValueError("Please specity either `keras_model` or `keras_model_path`, but not both.")
    if checkpoint_format is None:
        checkpoint_format = "checkpoint"
    if checkpoint_format not in ("checkpoint", "saver"):
        raise ValueError(
            f'Checkpoint format must be one of "checkpoint" or "saver". Got {checkpoint_format}'
        )
    custom_objects = resolve_custom_objects(custom_objects)

    if keras_model_path:
        keras_model = load_keras_model(
            keras_model_path, custom_objects, allow_unsafe_deserialization
        )
    else:
        compat.assert_valid_model(keras_model, custom_objects)
    if not getattr(keras_model, "optimizer", None):
        raise ValueError(
            "The given keras model has not been compiled yet. Please compile the model "
            "with `model.compile()` before calling `model_to_estimator()`."
        )
    save_object_ckpt = checkpoint_format == "checkpoint"
    if save_object_ckpt and not (
        compat.is_graph_network(keras_model) or isinstance(keras_model, tf.keras.Sequential)
    ):
        raise ValueError(
            "Object-based checkpoints are currently not supported with subclassed models."
        )

    classes = keras_classes(keras_model)
    optimizer = legacy_optimizer(keras_model.optimizer)
    model = private_copy(keras_model, optimizer, custom_objects)
    output_keys = output_keys_of(model)
    heads = None
    if not is_subclassed(model):  # a subclassed model's outputs are known once built
        if metric_names_map:
            _check_metric_names_map(compiled_metric_names(model), metric_names_map)
        heads = export_heads(model, output_keys, export_outputs)

    if config is not None and model_dir and config.model_dir and config.model_dir != model_dir:
        config = config.replace(model_dir=model_dir)  # the argument wins, as documented
    config = compat.maybe_overwrite_model_dir_and_session_config(config, model_dir)
    model_fn = _model_fn(
        model,
        custom_objects,
        save_object_ckpt,
        metric_names_map,
        output_keys,
        heads,
        classes,
        optimizer_state_from,
        class_names or {},
        export_outputs,
        output_losses=output_losses,
    )

    warm_start = None
    keras_ckpt = variables = None
    if compat.is_graph_network(model) and config.is_chief:
        keras_ckpt, variables = _keras_checkpoint(model, custom_objects, config, save_object_ckpt)
    if keras_ckpt:
        warm_start = tf.estimator.WarmStartSettings(
            ckpt_to_initialize_from=keras_ckpt,
            # A list (not the string ".*") selects every global variable, moving
            # statistics included, not only trainable ones. The Keras checkpoint's optimizer
            # variables (`training/...`) are freshly initialised ones: they are left out, and
            # slots come from `optimizer_state_from` when it is given. Under a
            # MirroredStrategy each variable's replica copies (`.../replica_1`) are
            # initialised from the first, which is what the checkpoint holds.
            vars_to_warm_start=variables or [_MODEL_VARIABLES],
        )
    restore_eager_classes(classes)
    return tf.estimator.Estimator(model_fn, config=config, warm_start_from=warm_start)


model_to_estimator = convert


def keras_classes(model):
    """Every Keras class an Estimator call may swap to v1: layers, the model, metrics.

    Building Keras models inside a `tf.Graph` (what every Estimator call does) swaps the
    base classes of Sequential, Dense, metrics... to their v1 twins for the whole process,
    which leaves every eager model of those classes in an "invalid state".
    """
    objects = [model, *compat.inner_layers(model)]
    for metric in [*getattr(model, "metrics", []), *compat.compiled_metric_objects(model)]:
        objects.extend(tf.nest.flatten(metric))
    return frozenset(type(o) for o in objects)


def restore_eager_classes(classes):
    if not compat.tf2_enabled():
        return
    for cls in classes:
        compat.use_v2_classes(cls)


# --------------------------------------------------------------------------- model source


class UnsafeModelFile(ValueError):
    """A saved model holds Python bytecode (a Lambda layer's function) that loading would run."""


def load_keras_model(url: str, custom_objects=None, allow_unsafe_deserialization=False):
    """Loads a compiled Keras model from any fsspec URL (.keras, .h5 or SavedModel dir).

    Lambda layers built from a `lambda` are stored as marshalled bytecode, which Keras runs
    while loading; Keras' `safe_mode` refuses them in `.keras` files only. Here every format
    is refused unless `allow_unsafe_deserialization` (for files you trust)."""
    if not storage.exists(url):
        raise FileNotFoundError(
            f"no Keras model at {storage.redact(url)}{storage.why_missing(url)}"
        )
    with tempfile.TemporaryDirectory(prefix="k2e-model-") as tmp:
        local = storage.fetch(url, tmp)
        if not allow_unsafe_deserialization:
            found = bytecode_layers(local)
            if found:
                raise UnsafeModelFile(
                    f"{storage.redact(url)} holds Lambda layer(s) {found} whose Python bytecode "
                    "would run while the file loads"
                )
        try:
            model = tf.keras.models.load_model(
                local,
                custom_objects=resolve_custom_objects(custom_objects),
                compile=True,
                **({"safe_mode": False} if allow_unsafe_deserialization else {}),
            )
        except (OSError, ValueError, TypeError, KeyError) as err:
            raise ValueError(
                f"cannot load a Keras model from {storage.redact(url)}: {first_line(err)}"
            ) from err
    return model


def bytecode_layers(local_path: str) -> list:
    """Names of the Lambda layers a saved model stores as bytecode (read from its config,
    nothing loaded): `.h5` model_config, `.keras` config.json, SavedModel keras_metadata.pb."""
    try:
        configs = _saved_configs(local_path)
    except Exception:  # an unreadable file: loading it fails with its own error
        return []
    found = []

    def walk(node):
        if isinstance(node, dict):
            config = node.get("config")
            if (
                node.get("class_name") == "Lambda"
                and isinstance(config, dict)
                and (
                    config.get("function_type") == "lambda"
                    or isinstance(config.get("function"), (list, tuple))
                )
            ):
                found.append(config.get("name", "lambda"))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for text in configs:
        try:
            walk(json.loads(text))
        except ValueError:
            continue
    return sorted(set(found))


def _saved_configs(local_path: str) -> list:
    configs = []
    if os.path.isdir(local_path):
        metadata = os.path.join(local_path, "keras_metadata.pb")
        if os.path.exists(metadata):
            from keras.protobuf import saved_metadata_pb2

            saved = saved_metadata_pb2.SavedMetadata()
            with open(metadata, "rb") as f:
                saved.ParseFromString(f.read())
            configs = [node.metadata for node in saved.nodes]
    elif local_path.endswith((".h5", ".hdf5")):
        import h5py

        with h5py.File(local_path, "r") as f:
            configs = [f.attrs.get("model_config") or "{}"]
    elif local_path.endswith(".keras"):
        import zipfile

        with zipfile.ZipFile(local_path) as archive:
            configs = [archive.read("config.json")]
    return configs


def _fresh_metrics(metrics, output_names):
    """New metric objects under their base names.

    Keras renames metric objects of multi-output models in place (`accuracy` becomes
    `dense_2_accuracy`), and saved models store them renamed; every clone then adds the
    prefix again (`dense_2_dense_2_accuracy`).
    """
    multi = len(output_names) > 1

    def fresh(metric, output):
        if not isinstance(metric, tf.keras.metrics.Metric):
            return metric
        cfg = metric.get_config()
        if multi and output and cfg["name"].startswith(output + "_"):
            cfg["name"] = cfg["name"][len(output) + 1 :]
        return type(metric).from_config(cfg)

    def each(value, output):
        return (
            [fresh(m, output) for m in value]
            if isinstance(value, (list, tuple))
            else fresh(value, output)
        )

    if isinstance(metrics, dict):
        return {key: each(value, key) for key, value in metrics.items()}
    if (
        isinstance(metrics, (list, tuple))
        and multi
        and len(metrics) == len(output_names)
        and all(isinstance(v, (list, tuple)) for v in metrics)
    ):
        return [each(value, output) for value, output in zip(metrics, output_names)]
    return each(metrics, None) if metrics is not None else None


def legacy_optimizer(optimizer):
    """The graph-mode (legacy) optimizer equal to `optimizer`, or a ValueError."""
    if isinstance(optimizer, (list, tuple)):
        return [legacy_optimizer(o) for o in optimizer]
    if isinstance(optimizer, tf.keras.optimizers.legacy.Optimizer):
        return optimizer
    if isinstance(optimizer, compat.TFOptimizer):
        # A tf.compat.v1.train optimizer, which compile() wraps itself; every graph-mode
        # clone wraps the same one again, as upstream's do.
        return optimizer.optimizer
    if not isinstance(optimizer, tf.keras.optimizers.Optimizer):
        return optimizer
    name = type(optimizer).__name__
    cfg = optimizer.get_config()
    lost = []
    if name not in _LEGACY_TWINS:
        lost.append(f"{name} has no graph-mode implementation")
    if cfg.get("weight_decay"):
        lost.append(f"weight_decay={cfg['weight_decay']}")
    if cfg.get("use_ema"):
        lost.append("use_ema=True")
    if lost:
        raise ValueError(
            f"optimizer: {', '.join(lost)} cannot be trained by an Estimator without "
            "silently changing training; compile the model with a "
            "tf.keras.optimizers.legacy optimizer (for example "
            "tf.keras.optimizers.legacy.Adam) and add weight decay as a kernel regularizer"
        )
    return compat.convert_to_legacy_optimizer(optimizer)


def private_copy(keras_model, optimizer, custom_objects=None):
    """A compiled copy of `keras_model` with equal weights; the original stays untouched."""
    args = compat.compile_args(keras_model)
    args["optimizer"] = optimizer
    with tf.keras.utils.custom_object_scope(custom_objects or {}):
        if is_subclassed(keras_model):
            # Built in each Estimator graph from the features (upstream's in-place reset);
            # a built model's weights seed the first session instead of a warm start.
            copy = type(keras_model).from_config(keras_model.get_config())
            copy._k2e_initial_weights = keras_model.get_weights() if keras_model.built else None
        else:
            copy = tf.keras.models.clone_model(keras_model, clone_function=clone_layer)
    if keras_model.built and copy.built:
        copy_weights(keras_model, copy)
    names = keras_model.output_names or []

    def compile_args(user_metrics=True):
        return {
            **args,
            "metrics": _fresh_metrics(args.get("metrics"), names),
            "weighted_metrics": _fresh_metrics(args.get("weighted_metrics"), names),
        }

    copy.compile(**compile_args())
    copy._k2e_compile_args = compile_args
    copy._k2e_optimizer = copy.optimizer
    return copy


def is_subclassed(model) -> bool:
    """A `Model` subclass with its own `call` (premade LinearModel, WideDeepModel too)."""
    return not (compat.is_graph_network(model) or isinstance(model, tf.keras.Sequential))


def functional_view(model, input_name: str | None = None):
    """A built subclassed model as a compiled functional model that calls it, with named
    inputs (from the shapes it was called with) for input pipelines and serving signatures.
    None when the model was never called, so its inputs are unknown."""
    spec = compat.save_spec(model)
    if spec is None:
        return None

    def keras_input(tensor_spec, name):
        return tf.keras.Input(shape=tensor_spec.shape[1:], dtype=tensor_spec.dtype, name=name)

    if isinstance(spec, dict) and all(isinstance(s, tf.TensorSpec) for s in spec.values()):
        inputs = {name: keras_input(s, name) for name, s in spec.items()}
    elif isinstance(spec, tf.TensorSpec):
        inputs = keras_input(spec, input_name or spec.name)
    else:
        return None
    view = tf.keras.Model(inputs, model(inputs), name=model.name)
    view.compile(**compat.compile_args(model))
    return view


def _fresh_compile_args(model):
    """Undoes upstream's caching before it clones `model` again.

    Upstream caches the source model's compile arguments and swaps in the clone's metric
    objects, which graph-mode compile then renames; every later clone would add another
    `<output>_` prefix to metric names.
    """
    compat.replace_compile_args(model, model._k2e_compile_args)


def clone_for(mode, model, custom_objects=None, **kwargs):
    """Upstream's clone-and-build, with fresh compile arguments for every clone."""
    _fresh_compile_args(model)
    return compat.clone_and_build_model(mode, model, custom_objects, **kwargs)


def output_keys_of(model):
    """Prediction keys aligned with `model.output_names`: dict keys where outputs are a dict.
    None for a subclassed model, whose outputs are known once it is built in a graph."""
    if model.output_names is None:
        return None
    nested = getattr(model, "_nested_outputs", None)
    if isinstance(nested, dict) and len(nested) == len(model.output_names):
        return sorted(nested)  # Keras flattens dict outputs in sorted-key order
    return list(model.output_names)


def keras_model_at(keras_model, checkpoint: str, checkpoint_format: str = "checkpoint"):
    """A copy of `keras_model` holding the weights of an Estimator checkpoint."""
    model = tf.keras.models.clone_model(keras_model, clone_function=clone_layer)
    if checkpoint_format == "checkpoint":
        model.load_weights(checkpoint).expect_partial().assert_existing_objects_matched()
    else:
        for weight in model.weights:
            weight.assign(tf.train.load_variable(checkpoint, weight.name.split(":")[0]))
    return model


# --------------------------------------------------------------------------- model_fn


def _check_metric_names_map(known, metric_names_map):
    if not metric_names_map:
        return
    unknown = set(metric_names_map) - set(known)
    if unknown:
        raise ValueError(
            f"metric_names_map: unknown Keras metric names {sorted(unknown)}; "
            f"the model's metrics are {sorted(known)}"
        )


def evaluation_metric_names(keras_model, metric_names_map=None, custom_objects=None):
    """The metrics (besides global_step) that the converted Estimator's evaluation reports."""
    copy = private_copy(keras_model, legacy_optimizer(keras_model.optimizer), custom_objects)
    names = metric_names_map or {}
    return ["loss", *(names.get(m, m) for m in compiled_metric_names(copy))]


def compiled_metric_names(model):
    """Metric names as the Estimator reports them before renaming (no losses)."""
    with keeping_classes_eager(model), tf.Graph().as_default():
        clone = clone_for(compat.ModeKeys.EVAL, model)
        compat.make_test_function(clone)
        return [m.name for m in compat.compiled_metrics(clone)]


@contextlib.contextmanager
def keeping_classes_eager(model):
    """Graph-mode Keras work inside leaves `model`'s classes usable eagerly after."""
    try:
        yield
    finally:
        restore_eager_classes(keras_classes(model))


class UnknownExportOutput(ValueError, compat.FormattedKeyError):
    """An export_outputs key that names no output (upstream raises FormattedKeyError)."""

    def __init__(self, message):
        ValueError.__init__(self, message)
        self.message = message


def export_heads(model, output_keys, export_outputs):
    """[(signature name, ExportOutput class, output key or None for all outputs)]."""
    if not export_outputs:
        return [(SERVING_DEFAULT, tf.estimator.export.PredictOutput, None)]
    heads = []
    for name, spec in export_outputs.items():
        if isinstance(spec, (tuple, list)):
            cls, key = spec
        else:
            cls, key = spec, name
        if key in output_keys:
            pass
        elif key in model.output_names:
            key = output_keys[model.output_names.index(key)]
        elif name == SERVING_DEFAULT and len(output_keys) == 1:
            key = output_keys[0]
        elif name == SERVING_DEFAULT and cls is tf.estimator.export.PredictOutput:
            key = None
        else:
            raise UnknownExportOutput(
                f"export_outputs[{name!r}]: {key!r} is not an output of the model (Missed "
                f"keys: {{{key!r}}}); use one of {output_keys}, or give (ExportOutput class, "
                "output name) as the value"
            )
        if not (isinstance(cls, type) and issubclass(cls, compat.ExportOutput)):
            raise ValueError(
                f"export_outputs[{name!r}]: expected an ExportOutput class such as "
                f"tf.estimator.export.PredictOutput, got {cls!r}"
            )
        heads.append((name, cls, key))
    if SERVING_DEFAULT not in {h[0] for h in heads}:
        heads.insert(0, (SERVING_DEFAULT, tf.estimator.export.PredictOutput, None))
    return heads


def _serving_receives_examples():
    """True when the graph being exported is fed serialized tf.Examples (one string input)."""
    placeholders = [
        op for op in tf.compat.v1.get_default_graph().get_operations() if op.type == "Placeholder"
    ]
    return len(placeholders) == 1 and placeholders[0].get_attr("dtype") == tf.string


def predicted_class_key(key, output_keys):
    return "class" if len(output_keys) == 1 else f"{key}_class"


def _predicted_classes(scores, names):
    """The name of each row's most likely class ([batch] strings); one unit: above 0.5."""
    if scores.shape[-1] == 1:
        index = tf.cast(tf.reshape(scores, [-1]) > 0.5, tf.int64)
    else:
        index = tf.argmax(scores, axis=-1)
    return tf.gather(tf.constant(names), index)


def _class_table(scores, names):
    """ClassificationOutput's classes: every class name, for every row."""
    rows = tf.shape(scores)[0]
    return tf.tile(tf.constant(names)[None, :], [rows, 1])


def _export_output(cls, tensor, name, examples, names=None):
    if cls is tf.estimator.export.PredictOutput:
        return cls(tensor if isinstance(tensor, dict) else {name: tensor})
    if isinstance(tensor, dict):
        raise ValueError(f"export_outputs[{name!r}]: {cls.__name__} needs a single output")
    if cls is tf.estimator.export.ClassificationOutput:
        if names and tensor.shape[-1] == 1:  # one sigmoid unit: the scores of both classes
            tensor = tf.concat([1 - tensor, tensor], axis=-1)
        classes = _class_table(tensor, names) if names else None
        out = cls(scores=tensor, classes=classes)
        # Classify signatures need serialized tf.Example input; with raw tensors TF would
        # drop the head silently, so it is exported as a predict signature instead.
        raw = {"scores": tensor, **({"classes": classes} if names else {})}
        return out if examples else tf.estimator.export.PredictOutput(raw)
    if cls is tf.estimator.export.RegressionOutput:
        out = cls(value=tensor)
        return out if examples else tf.estimator.export.PredictOutput({"outputs": tensor})
    return cls(tensor)


def _weights_per_output(features, output_names):
    """One sample-weight tensor for a multi-output model weighs every output, as in fit()."""
    if (
        isinstance(features, dict)
        and set(features) == {"features", "sample_weights"}
        and len(output_names) > 1
        and tf.is_tensor(features["sample_weights"])
    ):
        weights = features["sample_weights"]
        return {
            "features": features["features"],
            "sample_weights": {name: weights for name in output_names},
        }
    return features


def _model_fn(
    keras_model,
    custom_objects,
    save_object_ckpt,
    metric_names_map,
    output_keys,
    heads,
    classes,
    optimizer_state_from=None,
    class_names=None,
    export_outputs=None,
    output_losses=False,
):
    try:
        optimizer_config = keras_model.optimizer.get_config()
    except (NotImplementedError, AttributeError):
        optimizer_config = None

    def model_fn(features, labels, mode, config):
        features = _weights_per_output(features, keras_model.output_names or [])
        if (
            isinstance(features, dict)
            and list(features) == [SINGLE_FEATURE]
            and (is_subclassed(keras_model) or keras_model.input_names != [SINGLE_FEATURE])
        ):
            features = features[SINGLE_FEATURE]  # a receiver's single tensor, wrapped by TF
        if isinstance(labels, dict) and output_keys:
            labels = {
                keras_model.output_names[output_keys.index(k)] if k in output_keys else k: v
                for k, v in labels.items()
            }
        labels = _labels_like_outputs(labels, keras_model)
        model = clone_for(
            mode,
            keras_model,
            custom_objects,
            features=features,
            labels=labels,
            optimizer_config=optimizer_config,
        )
        keys = output_keys or output_keys_of(model)
        predictions = dict(zip(keys, model.outputs))
        for key, names in (class_names or {}).items():
            predictions[predicted_class_key(key, keys)] = _predicted_classes(
                predictions[key], names
            )
        loss = train_op = eval_metric_ops = None
        if mode != compat.ModeKeys.PREDICT:
            if mode == compat.ModeKeys.TRAIN:
                compat.make_train_function(model)
                train_op = model.train_function.updates_op
                if optimizer_state_from:
                    _init_slots_from(model, optimizer_state_from)
            else:
                compat.make_test_function(model)
            loss = model.total_loss
            if mode == compat.ModeKeys.EVAL:
                if tf.distribute.has_strategy():  # Keras divides it among the replicas
                    loss = loss * tf.distribute.get_strategy().num_replicas_in_sync
                loss = _loss_per_example(loss, model.outputs)
            metrics = {m.name: m for m in compat.compiled_metrics(model)}
            if is_subclassed(keras_model):
                _check_metric_names_map(metrics, metric_names_map)
            if mode == compat.ModeKeys.EVAL and output_losses:
                for name, value in compat.output_losses(model).items():
                    metrics[name] = _mean_per_example(value, model.outputs)
            names = metric_names_map or {}
            eval_metric_ops = {names.get(k, k): v for k, v in metrics.items()} or None
            if mode == compat.ModeKeys.TRAIN:
                summaries.collect_train_metrics(
                    {names.get(k, k): v for k, v in compat.running_results(metrics).items()}
                )

        scaffold = None
        init_fn = _initial_weights_fn(model, getattr(keras_model, "_k2e_initial_weights", None))
        if init_fn:
            scaffold = tf.compat.v1.train.Scaffold(init_fn=init_fn)
        if save_object_ckpt:
            compat.track(model, tf.compat.v1.train.get_global_step(), "estimator_global_step")
            graph_view = compat.ObjectGraphView(model)
            # Training checkpoints also hold the step under its usual name, for
            # get_variable_value and tools; other modes may restore the Keras warm-start
            # checkpoint (export before training), which has it under its object key only.
            by_name = (
                [tf.compat.v1.train.get_global_step()] if mode == compat.ModeKeys.TRAIN else []
            )
            saver = tf.compat.v1.train.Saver(
                var_list=[*graph_view.frozen_saveable_objects(), *by_name],
                sharded=True,
                max_to_keep=config.keep_checkpoint_max,
                keep_checkpoint_every_n_hours=config.keep_checkpoint_every_n_hours,
                save_relative_paths=True,  # the model_dir may be synced to another place
            )
            compat.restore_objects_with(saver, model)
            scaffold = tf.compat.v1.train.Scaffold(saver=saver, init_fn=init_fn)

        export = None
        if mode == compat.ModeKeys.PREDICT:
            examples = _serving_receives_examples()
            export = {
                name: _export_output(
                    cls,
                    predictions if key is None else predictions[key],
                    name if key is None else key,
                    examples,
                    (class_names or {}).get(key),
                )
                for name, cls, key in heads or export_heads(model, keys, export_outputs)
            }
        # Under a MirroredStrategy each replica's thread builds its own copy: the classes
        # stay swapped until all are built, when the first replica's hooks begin.
        in_replica = tf.distribute.has_strategy() and not tf.distribute.in_cross_replica_context()
        hooks = [_RestoreEagerClasses(classes)] if in_replica else []
        spec = tf.estimator.EstimatorSpec(
            mode=mode,
            predictions=predictions,
            loss=loss,
            train_op=train_op,
            eval_metric_ops=eval_metric_ops,
            export_outputs=export,
            scaffold=scaffold,
            training_hooks=hooks,
            evaluation_hooks=hooks,
            prediction_hooks=hooks,
        )
        # The spec holds plain tensors and ops now; nothing Keras runs after this point.
        if is_subclassed(keras_model):
            compat.restore_subclassed_model_state(keras_model)
            keras_model.optimizer = keras_model._k2e_optimizer  # unbuilt: restoration drops it
        if not in_replica:
            restore_eager_classes(classes)
        return spec

    return model_fn


def _labels_like_outputs(labels, model):
    """Rank-1 labels as [batch, 1] where the output is [batch, 1], as Keras does for arrays.

    Otherwise Keras' graph-mode losses and metrics broadcast them against the output to
    [batch, batch], and the numbers depend on the batch size."""
    outputs = dict(zip(model.output_names, model.outputs)) if model.outputs else {}

    def fix(label, output=None):
        if not tf.is_tensor(label) or label.shape.rank != 1:
            return label
        if output is not None and output.shape.rank == 1:
            return label
        return tf.expand_dims(label, -1)

    if isinstance(labels, dict):
        return {key: fix(value, outputs.get(key)) for key, value in labels.items()}
    if len(outputs) <= 1:  # one output, or a subclassed model's, unknown until it is built
        return fix(labels, next(iter(outputs.values()), None))
    return labels


def _mean_per_example(value, outputs):
    """An eval metric: a batch's mean `value`, averaged over examples (see below)."""
    rows = tf.shape(tf.nest.flatten(outputs)[0])[0]
    return tf.compat.v1.metrics.mean(tf.fill([rows], value))


def _loss_per_example(loss, outputs):
    """The evaluation loss as Keras' `evaluate` reports it: the mean over examples.

    The Estimator reports `tf.compat.v1.metrics.mean(loss)`, the mean of batch means,
    which moves with the batch size when the last batch is smaller. The batch's loss
    repeated once per example gives that metric the mean over examples; its rank is left
    unknown, which is what EstimatorSpec accepts for a loss that is not a scalar."""
    rows = tf.shape(tf.nest.flatten(outputs)[0])[0]
    return tf.compat.v1.placeholder_with_default(tf.fill([rows], loss), shape=None)


class _RestoreEagerClasses(tf.compat.v1.train.SessionRunHook):
    def __init__(self, classes):
        self._classes = classes

    def begin(self):
        restore_eager_classes(self._classes)


def _initial_weights_fn(model, weights):
    """A Scaffold init_fn that gives a fresh session a subclassed model's Keras weights
    (an Estimator starts from a checkpoint instead whenever model_dir holds one)."""
    if weights is None:
        return None
    variables = model.weights
    if [tuple(v.shape) for v in variables] != [np.shape(w) for w in weights]:
        log.warning(
            "the subclassed model's weights do not match the variables it builds "
            "from the features; training starts from freshly initialised weights"
        )
        return None
    feeds = [tf.compat.v1.placeholder(v.dtype.base_dtype, v.shape) for v in variables]
    assign = tf.group(*[v.assign(f) for v, f in zip(variables, feeds)])

    def init_fn(scaffold, session):
        session.run(assign, feed_dict=dict(zip(feeds, weights)))

    return init_fn


# --------------------------------------------------------------------------- warm start


def checkpoint_variables(reader) -> dict:
    """{variable name: (key in the checkpoint, shape)}, for name- and object-based checkpoints."""
    shapes = reader.get_variable_to_shape_map()
    if "_CHECKPOINTABLE_OBJECT_GRAPH" not in shapes:
        return {name: (name, shape) for name, shape in shapes.items()}
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    return {
        attr.full_name: (attr.checkpoint_key, shapes[attr.checkpoint_key])
        for node in graph.nodes
        for attr in node.attributes
        if attr.name == "VARIABLE_VALUE" and attr.full_name and attr.checkpoint_key in shapes
    }


def optimizer_slots_in(prefix: str, model) -> int:
    """How many of `model`'s optimizer slot variables (by name) a checkpoint holds."""
    found = checkpoint_variables(tf.train.load_checkpoint(prefix))
    names = [w.name.split(":")[0] for w in model.trainable_weights]
    return sum(
        1 for name in found for w in names if name.startswith("training/") and f"/{w}/" in name
    )


def _init_slots_from(model, prefix):
    """Initialises the optimizer's slot variables from the same-named ones in `prefix`."""
    optimizer = model.optimizer
    found = checkpoint_variables(tf.train.load_checkpoint(prefix))
    assignment = {}
    for weight in model.trainable_weights:
        for slot_name in optimizer.get_slot_names():
            slot = optimizer.get_slot(weight, slot_name)
            key, shape = found.get(slot.op.name, (None, None))
            if key and list(shape) == slot.shape.as_list():
                assignment[key] = slot
    if assignment:
        tf.compat.v1.train.init_from_checkpoint(prefix, assignment)
    log.info(
        "optimizer state: %d slot variable(s) from %s", len(assignment), os.path.basename(prefix)
    )


def fingerprint(model):
    """Architecture and weight digests that tell one Keras model from another."""
    arch = json.dumps(model.get_config(), sort_keys=True, default=str)
    weights = hashlib.sha256()
    for w in model.get_weights():
        weights.update(np.ascontiguousarray(w).tobytes())
    return {
        "architecture": hashlib.sha256(arch.encode()).hexdigest(),
        "weights": weights.hexdigest(),
    }


def _optimizer_names(model) -> str:
    """The optimizer class(es) a model is compiled with: their variables are checkpointed."""
    optimizers = (
        model.optimizer if isinstance(model.optimizer, (list, tuple)) else [model.optimizer]
    )
    return "+".join(type(o).__name__ for o in optimizers)


def checkpoint_fit(model, reader) -> dict:
    """How a checkpoint's variables fit `model`'s (by name and shape): the model's variables
    it lacks (`missing`), holds with another shape (`reshaped`), and its others (`extra`,
    optimizer state and the step not counted)."""
    found = {
        name: shape
        for name, (_, shape) in checkpoint_variables(reader).items()
        if not name.startswith("training/") and name != "global_step"
    }
    ours = {w.name.split(":")[0]: w.shape.as_list() for w in model.weights}
    return {
        "reshaped": [
            f"{name} {shape} vs {list(found[name])}"
            for name, shape in ours.items()
            if name in found and list(found[name]) != shape
        ],
        "missing": [name for name in ours if name not in found],
        "extra": [name for name in found if name not in ours],
    }


def _remove_checkpoints(directory):
    """Deletes the checkpoints a `checkpoint` state file lists, and the state file."""
    state = tf.train.get_checkpoint_state(directory)
    for prefix in state.all_model_checkpoint_paths if state else []:
        prefix = prefix if os.path.isabs(prefix) else os.path.join(directory, prefix)
        for path in tf.io.gfile.glob(prefix + ".*"):
            tf.io.gfile.remove(path)
    tf.io.gfile.remove(os.path.join(directory, "checkpoint"))


def _keras_checkpoint(model, custom_objects, config, save_object_ckpt):
    """(checkpoint, variables) to warm-start from: `model_dir/keras/keras_model.ckpt` written
    (or reused) for exactly this model, or a checkpoint the user saved there that fits the
    model (only the model's variables are taken from it); (None, None) when model_dir
    already holds a training checkpoint of the model."""
    keras_dir = os.path.join(config.model_dir, KERAS_DIR)
    marker = os.path.join(keras_dir, FINGERPRINT_FILE)
    current = dict(
        fingerprint(model),
        checkpoint_format="checkpoint" if save_object_ckpt else "saver",
        optimizer=_optimizer_names(model),
    )
    previous = None
    if tf.io.gfile.exists(marker):
        with tf.io.gfile.GFile(marker) as f:
            previous = json.load(f)
    trained = tf.train.latest_checkpoint(config.model_dir)
    if trained and (
        previous is None
        or previous["architecture"] != current["architecture"]
        or previous.get("checkpoint_format") != current["checkpoint_format"]
    ):
        raise ValueError(
            f"model_dir: {config.model_dir} holds checkpoints of a different model "
            f"({os.path.basename(trained)}); use a new model_dir or delete the old one"
        )
    if trained and previous.get("optimizer", current["optimizer"]) != current["optimizer"]:
        raise ValueError(
            f"model_dir: {config.model_dir} holds checkpoints trained with "
            f"{previous['optimizer']}, not {current['optimizer']} "
            f"({os.path.basename(trained)}); use a new model_dir (warm_start: {config.model_dir} "
            "keeps its weights), or compile the model with the optimizer it was trained with"
        )
    if trained:
        if previous["weights"] != current["weights"]:
            log.info(
                "model_dir holds training checkpoint %s of this model; resuming from it "
                "instead of the Keras model's current weights",
                os.path.basename(trained),
            )
        # Training restores from its own checkpoint and never reads the warm-start one,
        # so a resumed remote model_dir need not download it.
        return None, None
    existing = tf.train.latest_checkpoint(keras_dir)
    if existing and (previous is None or "user_checkpoint" in previous):
        fit = checkpoint_fit(model, tf.train.load_checkpoint(existing))
        if not (fit["missing"] or fit["reshaped"]):
            log.info(
                "warm start from %s, the Keras checkpoint in model_dir/keras (it holds "
                "every variable of the model)",
                os.path.basename(existing),
            )
            with tf.io.gfile.GFile(marker, "w") as f:
                json.dump({**current, "user_checkpoint": os.path.basename(existing)}, f)
            return existing, [re.escape(w.name.split(":")[0]) + ":" for w in model.weights]
        problems = "; ".join(
            f"{k}: {', '.join(v[:4])}" for k, v in fit.items() if v and k != "extra"
        )
        log.warning(
            "replacing %s in model_dir/keras, a checkpoint of another model (%s), "
            "with this model's weights",
            os.path.basename(existing),
            problems,
        )
        _remove_checkpoints(keras_dir)
    elif existing and previous != current:
        _remove_checkpoints(keras_dir)  # written for an earlier version of the model
    # Upstream builds its own graph; it must be called outside any graph so that it sees
    # the model's weights as initialised and copies them.
    with keeping_classes_eager(model):
        _fresh_compile_args(model)
        path = compat.save_first_checkpoint(model, custom_objects, config, save_object_ckpt)
    if previous != current:
        with tf.io.gfile.GFile(marker, "w") as f:
            json.dump(current, f)
    return path, None
