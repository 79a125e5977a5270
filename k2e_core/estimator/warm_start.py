"""Warm start on the Estimator trainer: the source's weights (k2e_core.steps.warm_start finds
them) are copied into the Keras model before conversion, so the Estimator starts from them the
same way it starts from any compiled model: every model variable, BatchNorm statistics
included. A checkpoint that does not fit stops the job naming the variables, or, with
`warm_start_mismatch: fresh`, is skipped (and the record says so).
"""

from __future__ import annotations

import logging
import os

from k2e_core.errors import SpecError, first_line
from k2e_core.estimator import keras_checkpoints, keras_copies
from k2e_core.estimator.compat import tf
from k2e_core.estimator.preprocessing import copy_weights
from k2e_core.inputs import data
from k2e_core.steps import warm_start as sources
from k2e_core.storage.checkpoints import unreadable
from k2e_core.trainer import Seed

log = logging.getLogger("k2e.warm_start")


def seed(model, model_dir: str, spec, staging_dir: str) -> Seed:
    """Puts the warm-start weights into `model`. Must run before conversion, which copies
    the model's weights into model_dir's first checkpoint.

    The source is resolved once, when model_dir is first converted, and recorded there;
    later steps take its weights from model_dir/keras and fetch its optimizer state again
    for the first training step. Once model_dir holds a training checkpoint, nothing is
    applied: training resumes from it."""
    record = sources.load_record(model_dir)
    if tf.train.latest_checkpoint(model_dir):
        return Seed(record)
    keras_ckpt = tf.train.latest_checkpoint(os.path.join(model_dir, data.KERAS_DIR))
    if record is not None and keras_ckpt:
        apply(model, keras_ckpt, record)
        return Seed(record, sources.fetch_optimizer_state(record, staging_dir))
    return sources.seed_from_source(model, model_dir, spec, staging_dir, apply, optimizer_state)


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
    object_based = "_CHECKPOINTABLE_OBJECT_GRAPH" in reader.get_variable_to_shape_map()
    try:
        source = keras_copies.keras_model_at(
            model, prefix, "checkpoint" if object_based else "saver"
        )
    except (
        AssertionError,
        ValueError,
        tf.errors.NotFoundError,
        tf.errors.InvalidArgumentError,
    ) as err:
        raise SpecError(
            field,
            f"{record['url']} does not fit this model "
            f"({mismatch(model, reader) or first_line(err)})",
            sources.FIX,
        ) from None
    copy_weights(source, model)  # layer by layer: adapted layers keep their state


def mismatch(model, reader) -> str:
    """Which of the model's variables the checkpoint lacks or holds with another shape."""
    fit = keras_checkpoints.checkpoint_fit(model, reader)
    parts = []
    for label, names in [
        ("shape (model vs checkpoint)", fit["reshaped"]),
        ("not in the checkpoint", fit["missing"]),
        ("only in the checkpoint", fit["extra"]),
    ]:
        if names:
            parts.append(f"{label}: {', '.join(names[:6])}" + (" ..." if len(names) > 6 else ""))
    return "; ".join(parts)


def optimizer_state(model, prefix: str, record: dict, staging_dir: str) -> str | None:
    """The local training checkpoint whose optimizer slots (Adam's moments...) fit `model`,
    noted in `record`; None when the source holds none (a SavedModel whose training
    checkpoint is gone, another optimizer): training then starts them fresh."""
    url = (
        record["url"]
        if record["from"] == "checkpoint"
        else sources.training_checkpoint_of(record["url"])
    )
    local = None
    if url:
        local = (
            prefix
            if record["from"] == "checkpoint"
            else sources.fetch_prefix(url, os.path.join(staging_dir, "optimizer_state"))
        )
        if not keras_checkpoints.optimizer_slots_in(local, model):
            url = local = None
    record["optimizer_state"] = url
    return local
