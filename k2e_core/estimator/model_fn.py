"""The Estimator's model_fn on a Keras model (`ModelFn`), the export heads and their
signatures, and the metric names evaluation reports."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from k2e_core import signatures
from k2e_core.estimator import compat, summaries
from k2e_core.estimator.compat import tf
from k2e_core.estimator.keras_checkpoints import init_slots_from
from k2e_core.estimator.keras_copies import (
    clone_for,
    is_subclassed,
    keeping_classes_eager,
    legacy_optimizer,
    output_keys_of,
    private_copy,
    restore_eager_classes,
)
from k2e_core.trainer import unknown_metric_names

log = logging.getLogger("k2e.conversion")


SERVING_DEFAULT = tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY


SINGLE_FEATURE = "feature"  # where ServingInputReceiver puts a single features tensor


def check_metric_names_map(known, metric_names_map):
    problem = unknown_metric_names(known, metric_names_map)
    if problem:
        raise ValueError(f"metric_names_map: {problem}")


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


def _export_output(cls, tensor, name, examples, names=None):
    if cls is tf.estimator.export.PredictOutput:
        return cls(tensor if isinstance(tensor, dict) else {name: tensor})
    if isinstance(tensor, dict):
        raise ValueError(f"export_outputs[{name!r}]: {cls.__name__} needs a single output")
    if cls is tf.estimator.export.ClassificationOutput:
        if names and tensor.shape[-1] == 1:  # one sigmoid unit: the scores of both classes
            tensor = tf.concat([1 - tensor, tensor], axis=-1)
        classes = signatures.class_table(tensor, names) if names else None
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


@dataclass
class ModelFn:
    """The Estimator's model_fn: each call clones the private Keras copy into the graph the
    Estimator builds (train, eval or predict) and returns that mode's EstimatorSpec."""

    keras_model: object  # the private copy (`keras_copies.private_copy`)
    custom_objects: dict
    save_object_ckpt: bool  # object-based checkpoints (`checkpoint_format: checkpoint`)
    output_keys: list | None  # prediction keys; None: known once the model is built
    heads: list | None  # `export_heads`; None: decided when predicting
    classes: object  # the Keras classes to leave eager after graph work
    metric_names_map: dict | None = None
    optimizer_state_from: str | None = None  # a checkpoint whose optimizer slots seed training
    class_names: dict = field(default_factory=dict)  # {output key: class names}
    export_outputs: dict | None = None
    output_losses: bool = False  # evaluation also reports each output's loss

    def __post_init__(self):
        try:
            self.optimizer_config = self.keras_model.optimizer.get_config()
        except (NotImplementedError, AttributeError):
            self.optimizer_config = None

    def __call__(self, features, labels, mode, config):
        features, labels = self._inputs(features, labels)
        model = clone_for(
            mode,
            self.keras_model,
            self.custom_objects,
            features=features,
            labels=labels,
            optimizer_config=self.optimizer_config,
        )
        keys = self.output_keys or output_keys_of(model)
        predictions = self._predictions(model, keys)
        loss = train_op = eval_metric_ops = None
        if mode != compat.ModeKeys.PREDICT:
            loss, train_op, eval_metric_ops = self._loss_and_metrics(model, mode)
        scaffold = self._scaffold(model, mode, config)
        export = None
        if mode == compat.ModeKeys.PREDICT:
            export = self._export_outputs(model, keys, predictions)
        # Under a MirroredStrategy each replica's thread builds its own copy: the classes
        # stay swapped until all are built, when the first replica's hooks begin.
        in_replica = tf.distribute.has_strategy() and not tf.distribute.in_cross_replica_context()
        hooks = [_RestoreEagerClasses(self.classes)] if in_replica else []
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
        if is_subclassed(self.keras_model):
            compat.restore_subclassed_model_state(self.keras_model)
            # unbuilt: restoration drops it
            self.keras_model.optimizer = self.keras_model._k2e_optimizer
        if not in_replica:
            restore_eager_classes(self.classes)
        return spec

    def _inputs(self, features, labels):
        """Features and labels as the Keras model takes them: sample weights per output, a
        receiver's single tensor unwrapped, labels by output name and shaped like outputs."""
        keras_model, output_keys = self.keras_model, self.output_keys
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
        return features, _labels_like_outputs(labels, keras_model)

    def _predictions(self, model, keys) -> dict:
        predictions = dict(zip(keys, model.outputs))
        for key, names in self.class_names.items():
            predictions[signatures.predicted_class_key(key, keys)] = signatures.predicted_classes(
                predictions[key], names
            )
        return predictions

    def _loss_and_metrics(self, model, mode):
        """(loss, train_op, eval_metric_ops) as Keras' train and test functions build them;
        training also collects its running metrics for the train curves."""
        train_op = None
        if mode == compat.ModeKeys.TRAIN:
            compat.make_train_function(model)
            train_op = model.train_function.updates_op
            if self.optimizer_state_from:
                init_slots_from(model, self.optimizer_state_from)
        else:
            compat.make_test_function(model)
        loss = model.total_loss
        if mode == compat.ModeKeys.EVAL:
            if tf.distribute.has_strategy():  # Keras divides it among the replicas
                loss = loss * tf.distribute.get_strategy().num_replicas_in_sync
            loss = _loss_per_example(loss, model.outputs)
        metrics = {m.name: m for m in compat.compiled_metrics(model)}
        if is_subclassed(self.keras_model):
            check_metric_names_map(metrics, self.metric_names_map)
        if mode == compat.ModeKeys.EVAL and self.output_losses:
            for name, value in compat.output_losses(model).items():
                metrics[name] = _mean_per_example(value, model.outputs)
        names = self.metric_names_map or {}
        eval_metric_ops = {names.get(k, k): v for k, v in metrics.items()} or None
        if mode == compat.ModeKeys.TRAIN:
            summaries.collect_train_metrics(
                {names.get(k, k): v for k, v in compat.running_results(metrics).items()}
            )
        return loss, train_op, eval_metric_ops

    def _scaffold(self, model, mode, config):
        """The Keras weights of a fitted subclassed model, and with object-based checkpoints
        a saver of the model's object graph."""
        weights = getattr(self.keras_model, "_k2e_initial_weights", None)
        init_fn = _initial_weights_fn(model, weights)
        if not self.save_object_ckpt:
            return tf.compat.v1.train.Scaffold(init_fn=init_fn) if init_fn else None
        compat.track(model, tf.compat.v1.train.get_global_step(), "estimator_global_step")
        graph_view = compat.ObjectGraphView(model)
        # Training checkpoints also hold the step under its usual name, for
        # get_variable_value and tools; other modes may restore the Keras warm-start
        # checkpoint (export before training), which has it under its object key only.
        by_name = [tf.compat.v1.train.get_global_step()] if mode == compat.ModeKeys.TRAIN else []
        saver = tf.compat.v1.train.Saver(
            var_list=[*graph_view.frozen_saveable_objects(), *by_name],
            sharded=True,
            max_to_keep=config.keep_checkpoint_max,
            keep_checkpoint_every_n_hours=config.keep_checkpoint_every_n_hours,
            save_relative_paths=True,  # the model_dir may be synced to another place
        )
        compat.restore_objects_with(saver, model)
        return tf.compat.v1.train.Scaffold(saver=saver, init_fn=init_fn)

    def _export_outputs(self, model, keys, predictions) -> dict:
        examples = _serving_receives_examples()
        return {
            name: _export_output(
                cls,
                predictions if key is None else predictions[key],
                name if key is None else key,
                examples,
                self.class_names.get(key),
            )
            for name, cls, key in self.heads or export_heads(model, keys, self.export_outputs)
        }


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
