"""The private copy of the user's Keras model that the Estimator trains, and views of it:
the copy per graph mode (`clone_for`), the copy at a checkpoint (`keras_model_at`), a
subclassed model's functional view, the optimizer made a legacy one where that is exact.
The caller's model is never touched."""

from __future__ import annotations

import contextlib
import logging

from k2e_core.estimator import compat
from k2e_core.estimator.compat import tf
from k2e_core.estimator.preprocessing import clone_layer, copy_weights

log = logging.getLogger("k2e.conversion")


# Optimizers whose legacy twin trains identically when the new-only options are unset.
_LEGACY_TWINS = {"SGD", "Adam", "RMSprop", "Adagrad", "Adadelta", "Adamax", "Nadam", "Ftrl"}


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


@contextlib.contextmanager
def keeping_classes_eager(model):
    """Graph-mode Keras work inside leaves `model`'s classes usable eagerly after."""
    try:
        yield
    finally:
        restore_eager_classes(keras_classes(model))


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


def fresh_compile_args(model):
    """Undoes upstream's caching before it clones `model` again.

    Upstream caches the source model's compile arguments and swaps in the clone's metric
    objects, which graph-mode compile then renames; every later clone would add another
    `<output>_` prefix to metric names.
    """
    compat.replace_compile_args(model, model._k2e_compile_args)


def clone_for(mode, model, custom_objects=None, **kwargs):
    """Upstream's clone-and-build, with fresh compile arguments for every clone."""
    fresh_compile_args(model)
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
