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

import logging

from k2e_core.estimator import compat
from k2e_core.estimator.compat import tf
from k2e_core.estimator.keras_checkpoints import MODEL_VARIABLES, keras_checkpoint
from k2e_core.estimator.keras_copies import (
    is_subclassed,
    keras_classes,
    legacy_optimizer,
    output_keys_of,
    private_copy,
    restore_eager_classes,
)
from k2e_core.estimator.model_files import load_keras_model
from k2e_core.estimator.model_fn import (
    ModelFn,
    check_metric_names_map,
    compiled_metric_names,
    export_heads,
)
from k2e_core.objects import resolve_custom_objects

log = logging.getLogger("k2e.conversion")


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
            check_metric_names_map(compiled_metric_names(model), metric_names_map)
        heads = export_heads(model, output_keys, export_outputs)

    if config is not None and model_dir and config.model_dir and config.model_dir != model_dir:
        config = config.replace(model_dir=model_dir)  # the argument wins, as documented
    config = compat.maybe_overwrite_model_dir_and_session_config(config, model_dir)
    model_fn = ModelFn(
        keras_model=model,
        custom_objects=custom_objects,
        save_object_ckpt=save_object_ckpt,
        output_keys=output_keys,
        heads=heads,
        classes=classes,
        metric_names_map=metric_names_map,
        optimizer_state_from=optimizer_state_from,
        class_names=class_names or {},
        export_outputs=export_outputs,
        output_losses=output_losses,
    )

    warm_start = None
    keras_ckpt = variables = None
    if compat.is_graph_network(model) and config.is_chief:
        keras_ckpt, variables = keras_checkpoint(model, custom_objects, config, save_object_ckpt)
    if keras_ckpt:
        warm_start = tf.estimator.WarmStartSettings(
            ckpt_to_initialize_from=keras_ckpt,
            # A list (not the string ".*") selects every global variable, moving
            # statistics included, not only trainable ones. The Keras checkpoint's optimizer
            # variables (`training/...`) are freshly initialised ones: they are left out, and
            # slots come from `optimizer_state_from` when it is given. Under a
            # MirroredStrategy each variable's replica copies (`.../replica_1`) are
            # initialised from the first, which is what the checkpoint holds.
            vars_to_warm_start=variables or [MODEL_VARIABLES],
        )
    restore_eager_classes(classes)
    return tf.estimator.Estimator(model_fn, config=config, warm_start_from=warm_start)


model_to_estimator = convert
