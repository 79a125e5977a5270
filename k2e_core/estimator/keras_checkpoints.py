"""Keras checkpoints in model_dir: the warm-start checkpoint the Estimator starts from
(`model_dir/keras`, with the fingerprint that keeps a reused model_dir from warm-starting
another model), what a checkpoint holds and whether it fits a model, optimizer slots."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re

import numpy as np

from k2e_core.estimator import compat
from k2e_core.estimator.compat import tf
from k2e_core.estimator.keras_copies import fresh_compile_args, keeping_classes_eager
from k2e_core.inputs.data import KERAS_DIR

log = logging.getLogger("k2e.conversion")


FINGERPRINT_FILE = "k2e-model.json"


# What warm-starts from the Keras checkpoint: not the optimizer's variables, not the replica
# copies a MirroredStrategy makes of each variable.
MODEL_VARIABLES = r"^(?!training/)(?!.*/replica_\d+:)"


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


def init_slots_from(model, prefix):
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


def keras_checkpoint(model, custom_objects, config, save_object_ckpt):
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
        fresh_compile_args(model)
        path = compat.save_first_checkpoint(model, custom_objects, config, save_object_ckpt)
    if previous != current:
        with tf.io.gfile.GFile(marker, "w") as f:
            json.dump(current, f)
    return path, None
