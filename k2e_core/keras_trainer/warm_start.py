"""Warm start on the Keras trainer: a new model_dir's first weights from a version or a
checkpoint (k2e_core.steps.warm_start finds it), written by either trainer.

- This trainer's checkpoints and versions hold the model under `model/` in their object
  graph: restored as they are.
- The Estimator trainer's (Keras 2) hold each layer with weights as `layer_with_weights-N`,
  N counting the model's layers that have weights, in order, and each variable under its
  name (`kernel`, `bias`, `gamma`, `moving_mean`...): the same model built on Keras 3 has the
  same layers in the same order, so each variable is read from there. This is how a model
  line moves from one trainer to the other without starting over.

A source that does not fit stops the job naming the variables, or with
`warm_start_mismatch: fresh` is skipped (and the record says so). The optimizer's state
(Adam's moments...) comes from the source's training checkpoint (a version's: the
checkpoint it was exported from, while its model_dir keeps it) where that is this
trainer's and fits, or is the Estimator trainer's and both optimizers are Adam; its step
count starts at 0. Otherwise it starts fresh, and the record's `optimizer_state` is null."""

from __future__ import annotations

import logging
import os

import keras

from k2e_core import storage
from k2e_core.errors import SpecError, first_line
from k2e_core.keras_trainer import compat
from k2e_core.steps import warm_start as sources
from k2e_core.storage.checkpoints import unreadable
from k2e_core.tf_runtime import tf
from k2e_core.trainer import Seed

log = logging.getLogger("k2e.warm_start")

_KERAS2_LAYER = "layer_with_weights-"
_VALUE = "/.ATTRIBUTES/VARIABLE_VALUE"
_KERAS3_STEP = "optimizer/_iterations" + _VALUE  # a training checkpoint of this trainer


def seed(model, model_dir: str, spec, staging_dir: str) -> Seed:
    """Puts the warm-start weights into `model` when model_dir holds no checkpoint yet
    (the trainer then saves them as step 0, which later steps restore)."""
    record = sources.load_record(model_dir)
    if tf.train.latest_checkpoint(model_dir):
        return Seed(record)
    return sources.seed_from_source(model, model_dir, spec, staging_dir, apply, optimizer_state)


def optimizer_state(model, prefix: str, record: dict, staging_dir: str) -> None:
    """Restores the optimizer's variables from the source's training checkpoint where it is
    this trainer's and fits, its step count set back to 0, and notes that checkpoint in
    `record` (None: the optimizer starts fresh). Nothing for training to fetch later: the
    state is in the model_dir's first checkpoint."""
    record["optimizer_state"] = _restore_optimizer(model, prefix, record, staging_dir)


def _restore_optimizer(model, prefix: str, record: dict, staging_dir: str) -> str | None:
    url = (
        prefix if record["from"] == "checkpoint" else sources.training_checkpoint_of(record["url"])
    )
    if not url:
        return None
    local = prefix if url == prefix else sources.fetch_prefix(url, staging_dir)
    reader = tf.train.load_checkpoint(local)
    names = reader.get_variable_to_shape_map()
    model.optimizer.build(model.trainable_variables)
    if _KERAS3_STEP not in names:
        slots = _keras2_adam_slots(model, reader, names)
        if slots is None:
            return None  # another optimizer's state, or none at all: it starts fresh
        for variable, value in slots:
            variable.assign(value)
        return record["url"] if url == prefix else storage.redact(url)
    fresh = [variable.numpy() for variable in model.optimizer.variables]
    try:
        tf.train.Checkpoint(optimizer=model.optimizer).restore(
            local
        ).expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError):
        for variable, value in zip(model.optimizer.variables, fresh):
            variable.assign(value)  # a failed restore may have assigned some of them
        return None
    model.optimizer.iterations.assign(0)
    return record["url"] if url == prefix else storage.redact(url)


def _keras2_adam_slots(model, reader, shapes) -> list | None:
    """[(Keras 3 Adam variable, value)] from the Estimator trainer's checkpoint (Keras 2's
    Adam: `layer_with_weights-N/<weight>/.OPTIMIZER_SLOT/optimizer/m`, `v`, with amsgrad
    `vhat`), or None where the model's optimizer is not Adam or a slot is missing or
    misshapen."""
    optimizer = model.optimizer
    adam_state = "optimizer/beta_1" + _VALUE in shapes
    if not (isinstance(optimizer, keras.optimizers.Adam) and adam_state):
        return None
    slots = {"m": "momentum", "v": "velocity"}
    if optimizer.amsgrad:
        slots["vhat"] = "velocity_hat"
    pairs = []
    with_weights = [layer for layer in model.layers if layer.weights]
    for index, layer in enumerate(with_weights):
        for variable in layer.trainable_weights:
            for keras2, keras3 in slots.items():
                key = f"{_KERAS2_LAYER}{index}/{variable.name}/.OPTIMIZER_SLOT/optimizer/{keras2}"
                target = compat.optimizer_slot(optimizer, variable, keras3)
                if target is None or list(shapes.get(key + _VALUE, [-1])) != list(target.shape):
                    return None
                pairs.append((target, reader.get_tensor(key + _VALUE)))
    return pairs


def apply(model, prefix: str, record: dict, field: str = "warm_start") -> None:
    """Copies the checkpoint's model variables into `model`, or says which do not fit."""
    damaged = unreadable(prefix)
    if damaged:
        raise SpecError(
            field,
            f"{record['url']} does not read ({damaged})",
            "restore its files, or " + sources.FIX,
        )
    reader = tf.train.load_checkpoint(prefix)
    shapes = reader.get_variable_to_shape_map()
    if any(name.startswith(_KERAS2_LAYER) for name in shapes):
        values, problems = _keras2_values(model, reader, shapes)
        if problems:
            raise SpecError(
                field, f"{record['url']} does not fit this model ({problems})", sources.FIX
            )
        for variable, value in values:
            variable.assign(value)
        return
    try:
        status = tf.train.Checkpoint(model=model).read(prefix)  # read: no save_counter
        status.expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as err:
        raise SpecError(
            field, f"{record['url']} does not fit this model ({first_line(err, 200)})", sources.FIX
        ) from None


def _keras2_values(model, reader, shapes) -> tuple[list, str]:
    """[(variable, value)] read from a Keras 2 checkpoint, and what does not fit ("" when
    everything does)."""
    values, missing, reshaped = [], [], []
    with_weights = [layer for layer in model.layers if layer.weights]
    for index, layer in enumerate(with_weights):
        for variable in layer.weights:
            key = f"{_KERAS2_LAYER}{index}/{variable.name}{_VALUE}"
            if key not in shapes:
                missing.append(variable.path)
            elif list(shapes[key]) != list(variable.shape):
                reshaped.append(f"{variable.path} {list(variable.shape)} vs {shapes[key]}")
            else:
                values.append((variable, reader.get_tensor(key)))
    used = {f"{_KERAS2_LAYER}{i}/" for i in range(len(with_weights))}
    extra = sorted(
        {
            name.split("/")[0]
            for name in shapes
            if name.startswith(_KERAS2_LAYER) and ".OPTIMIZER_SLOT" not in name
        }
        - {u.rstrip("/") for u in used}
    )
    parts = []
    for label, names in [
        ("shape (model vs checkpoint)", reshaped),
        ("not in the checkpoint", missing),
        ("only in the checkpoint", extra),
    ]:
        if names:
            parts.append(f"{label}: {', '.join(names[:6])}" + (" ..." if len(names) > 6 else ""))
    return values, "; ".join(parts)


def apply_version(model, version_url: str, version: int, staging_dir: str) -> None:
    """A published version's weights (either trainer's) into `model` (the gate's baseline)."""
    prefix = sources.version_checkpoint(version_url, os.path.join(staging_dir, "baseline"))
    apply(model, prefix, {"url": f"version {version}"}, field="gate.baseline")


def locate(spec) -> None:
    sources.locate(spec)
