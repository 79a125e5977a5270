"""Every private TensorFlow, Keras 2 and Estimator API the Estimator trainer relies on, in
one place, after a check that this interpreter has that trainer's stack (package metadata).

TensorFlow itself comes from `k2e_core.tf_runtime`, quietly. The private parts below are
what breaks first when the versions pinned in constraints.txt move (k2e_core.versions
checks them): upstream `model_to_estimator`'s own helpers (`keras_lib`), Keras 2's engine
classes, the Estimator's private training executor, and private attributes of Keras models
and layers. Everything else in k2e uses public APIs.
"""

import logging

from k2e_core.versions import check_stack

check_stack("estimator")

from k2e_core.tf_runtime import QUIET, tf  # noqa: E402 - quiets TensorFlow before it loads

# isort: split
from keras.src.engine import base_layer, base_layer_v1, training_v1  # noqa: E402
from keras.src.engine import training as keras_training  # noqa: E402
from keras.src.layers.preprocessing import discretization, index_lookup  # noqa: E402
from keras.src.optimizers import optimizer_v1  # noqa: E402
from keras.src.utils import version_utils  # noqa: E402
from tensorflow.python.training import session_manager  # noqa: E402
from tensorflow.python.util import deprecation  # noqa: E402
from tensorflow_estimator.python.estimator import estimator as estimator_lib  # noqa: E402
from tensorflow_estimator.python.estimator import keras_lib  # noqa: E402
from tensorflow_estimator.python.estimator import training as estimator_training  # noqa: E402
from tensorflow_estimator.python.estimator.export import export_lib  # noqa: E402


def _said_by_k2e(record: logging.LogRecord) -> bool:
    """Drops TensorFlow's ERROR lines that k2e reports in its own words (a NaN loss)."""
    return not str(record.msg).startswith("Model diverged with loss")


if QUIET:
    deprecation._PRINT_DEPRECATION_WARNINGS = False
    tf.get_logger().addFilter(_said_by_k2e)

ModeKeys = tf.estimator.ModeKeys
ExportOutput = export_lib.ExportOutput
FormattedKeyError = keras_lib.FormattedKeyError
TFOptimizer = optimizer_v1.TFOptimizer
maybe_overwrite_model_dir_and_session_config = (
    estimator_lib.maybe_overwrite_model_dir_and_session_config
)
TrainingExecutor = estimator_training._TrainingExecutor
ContinuousEvalListener = estimator_training._ContinuousEvalListener
Discretization = discretization.Discretization
IndexLookup = index_lookup.IndexLookup

# upstream model_to_estimator's helpers, used as upstream uses them
assert_valid_model = keras_lib._assert_valid_model
clone_and_build_model = keras_lib._clone_and_build_model
save_first_checkpoint = keras_lib._save_first_checkpoint
frozen_saver = keras_lib.trackable_util.frozen_saver


convert_to_legacy_optimizer = tf.keras.__internal__.optimizers.convert_to_legacy_optimizer
ObjectGraphView = tf.compat.v2.__internal__.tracking.ObjectGraphView
restore_subclassed_model_state = (
    tf.keras.__internal__.models.in_place_subclassed_model_state_restoration
)


def tf2_enabled() -> bool:
    return tf.__internal__.tf2.enabled()


def use_v2_classes(cls) -> None:
    """Makes a Keras class built under TF1 behaviour use the v2 Layer/Model base classes."""
    if issubclass(cls, (base_layer.Layer, base_layer_v1.Layer)):
        version_utils.swap_class(cls, base_layer.Layer, base_layer_v1.Layer, use_v2=True)
    if issubclass(cls, (keras_training.Model, training_v1.Model)):
        version_utils.swap_class(cls, keras_training.Model, training_v1.Model, use_v2=True)


# --------------------------------------------------------------------------- Keras internals


def is_graph_network(model) -> bool:
    """Functional (or Sequential) rather than subclassed."""
    return model._is_graph_network


def compile_args(model) -> dict:
    """What the model was compiled with: optimizer, loss, metrics, loss_weights..."""
    return model._get_compile_args()


def replace_compile_args(model, compile_args_fn) -> None:
    model._get_compile_args = compile_args_fn


def save_spec(model):
    """The input signature Keras recorded on the model's first call (batch dimension None)."""
    return model._get_save_spec(dynamic_batch=True)


def inner_layers(model) -> list:
    return list(model._flatten_layers(include_self=False, recursive=True))


def compiled_metric_objects(model) -> list:
    """The metrics `compile` was given, as Keras holds them (possibly not built yet)."""
    return getattr(getattr(model, "compiled_metrics", None), "_metrics", None) or []


def make_train_function(model) -> None:
    model._make_train_function()


def make_test_function(model) -> None:
    model._make_test_function()


def compiled_metrics(model) -> list:
    """The metric objects of a compiled graph-mode model, as its test function reports them."""
    return model._compile_metric_functions


def output_losses(model) -> dict:
    """A compiled multi-output graph-mode model's loss per output (`<output>_loss`: the
    batch's mean, before loss weights, as Keras' evaluate reports it beside the total);
    none for one output."""
    endpoints = [e for e in getattr(model, "_training_endpoints", []) if not e.should_skip_target()]
    if len(endpoints) < 2:
        return {}
    return {
        e.loss_name(): e.loss_fn(e.training_target.target, e.output, sample_weight=e.sample_weight)
        for e in endpoints
    }


def also_checkpoint_every(estimator, steps: int | None) -> None:
    """Makes `estimator` also save a checkpoint after at most `steps` steps while its
    RunConfig saves by time (train_and_evaluate evaluates each checkpoint). RunConfig takes
    one of the two; the saver hook's timer triggers on either, only its constructor refuses
    both. Estimator forbids subclasses to override its members, so the instance's training
    method is wrapped."""
    config = estimator.config
    if not steps or not config.save_checkpoints_secs or not config.is_chief:
        return
    train = type(estimator)._train_with_estimator_spec.__get__(estimator)

    def train_with_spec(estimator_spec, worker_hooks, hooks, global_step_tensor, listeners):
        saver = tf.compat.v1.train.CheckpointSaverHook(
            estimator.model_dir,
            save_secs=config.save_checkpoints_secs,
            scaffold=estimator_spec.scaffold,
            save_graph_def=config.checkpoint_save_graph_def,
        )
        saver._timer._every_steps = steps
        # with a saver hook among the hooks, the Estimator adds none of its own
        return train(estimator_spec, [*worker_hooks, saver], hooks, global_step_tensor, listeners)

    estimator._train_with_estimator_spec = train_with_spec


def running_results(metrics: dict) -> dict:
    """{name: (result tensor, state variables)} of compiled metrics in a graph-mode train
    function: the tensor updates the metric with the batch and returns its running value."""
    return {
        name: (metric._call_result, metric.variables)
        for name, metric in metrics.items()
        if getattr(metric, "_call_result", None) is not None
    }


def track(model, trackable, name: str) -> None:
    model._track_trackable(trackable, name)


def restore_objects_with(saver, model) -> None:
    """Lets a name-based saver restore object-based checkpoints of `model` (as upstream)."""
    saver._object_restore_saver = frozen_saver(model)


def token_start_index(lookup) -> int:
    """How many reserved tokens (mask, OOV) a lookup layer puts before its vocabulary."""
    return lookup._token_start_index()


def freeze_vocabulary_size(lookup, size: int) -> None:
    """Gives a lookup layer a fixed vocabulary size, which graph-mode building needs."""
    lookup._frozen_vocab_size = size


def rename_layer(layer, name: str) -> None:
    layer._name = name


def check_workers_every_second() -> None:
    """Workers ask whether the chief has initialised the variables every second, not every
    30 s (TF's default), which would idle them through short jobs."""
    init = session_manager.SessionManager.__init__
    if getattr(init, "_k2e", False):
        return

    def __init__(self, *args, recovery_wait_secs=1, **kwargs):
        init(self, *args, recovery_wait_secs=recovery_wait_secs, **kwargs)

    __init__._k2e = True
    session_manager.SessionManager.__init__ = __init__


__all__ = ["tf"]
