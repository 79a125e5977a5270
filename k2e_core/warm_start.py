"""Warm start: a new model_dir's first weights from a published version or another checkpoint.

`warm_start` in the spec names the source. Its weights are copied into the Keras model
before conversion, so the Estimator starts from them the same way it starts from any
compiled model: every model variable, BatchNorm statistics included. Optimizer state is not
carried over (a run that resumes its own model_dir keeps it). What was used is recorded in
`model_dir/keras/k2e-warm-start.json` and, through the export step, in the version's manifest.
"""

from __future__ import annotations

import json
import logging
import os

from k2e_core import conversion, publish, storage
from k2e_core._tensorflow import tf
from k2e_core.checkpoints import STATE, latest_checkpoint_name
from k2e_core.errors import SpecError, first_line

log = logging.getLogger("k2e.warm_start")

RECORD = os.path.join(conversion.KERAS_DIR, "k2e-warm-start.json")
_FIX = "set warm_start=none to start from the model's own weights, or name a checkpoint of this model"


def resolve(spec, staging_dir: str) -> tuple[str, dict] | None:
    """(local checkpoint prefix, record) for `spec.warm_start`; None: nothing to start from."""
    value = spec.warm_start
    if not value:
        return None
    if value == "latest" or value.isdigit():
        if spec.export is None:
            raise SpecError("warm_start", f"{value!r} names a published version, but the spec "
                            "has no export section", "add export.base, or give a checkpoint URL")
        base = spec.path(spec.export.base)
        published = publish.versions(base)
        if value == "latest" and not published:
            log.info("warm start: nothing published under %s yet; starting from the model's "
                     "own weights", storage.redact(base))
            return None
        version = published[-1] if value == "latest" else int(value)
        if version not in published:
            raise SpecError("warm_start", f"no version {version} under {storage.redact(base)}",
                            f"use 'latest' or one of {published[-5:]}")
        url = storage.join(base, str(version))
        return _version_checkpoint(url, staging_dir), {
            "from": value, "version": version, "url": storage.redact(url)}
    url = spec.path(value)
    if storage.exists(storage.join(url, "saved_model.pb")):
        return _version_checkpoint(url, staging_dir), {"from": "version", "url": storage.redact(url)}
    prefix = _checkpoint_prefix(url)
    return _fetch_prefix(prefix, staging_dir), {"from": "checkpoint", "url": storage.redact(prefix)}


def apply(model, prefix: str, record: dict) -> None:
    """Copies the checkpoint's model variables into `model`, or says which do not fit."""
    reader = tf.train.load_checkpoint(prefix)
    object_based = "_CHECKPOINTABLE_OBJECT_GRAPH" in reader.get_variable_to_shape_map()
    try:
        source = conversion.keras_model_at(model, prefix,
                                           "checkpoint" if object_based else "saver")
    except (AssertionError, ValueError, tf.errors.NotFoundError,
            tf.errors.InvalidArgumentError) as err:
        raise SpecError("warm_start", f"{record['url']} does not fit this model "
                        f"({first_line(err)})", _FIX) from None
    model.set_weights(source.get_weights())
    log.info("warm start from %s", record["url"])


def save_record(model_dir: str, record: dict | None) -> None:
    """Writes the record (None removes a stale one)."""
    path = os.path.join(model_dir, RECORD)
    if record is None:
        if os.path.exists(path):
            os.remove(path)
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(record, f)


def load_record(model_dir: str) -> dict | None:
    path = os.path.join(model_dir, RECORD)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _version_checkpoint(version_url: str, staging_dir: str) -> str:
    local = storage.fetch(storage.join(version_url, "variables"),
                          os.path.join(staging_dir, "warm_start"))
    return os.path.join(local, "variables")


def _checkpoint_prefix(url: str) -> str:
    """A checkpoint prefix from a prefix itself or from a model_dir (its latest checkpoint)."""
    state = storage.join(url, STATE)
    latest = storage.exists(state) and latest_checkpoint_name(storage.read_bytes(state).decode())
    if latest:
        return storage.join(url, latest)
    if storage.exists(url + ".index"):
        return url
    raise SpecError("warm_start", f"no checkpoint at {storage.redact(url)}",
                    "give a checkpoint prefix (.../model.ckpt-1000), a model_dir, a published "
                    "version's URL, 'latest' or 'none'")


def _fetch_prefix(prefix: str, staging_dir: str) -> str:
    if storage.is_local(prefix):
        return storage.local_path(prefix)
    local_dir = os.path.join(staging_dir, "warm_start")
    files = [f for f in storage.glob(prefix + ".*") if not f.endswith(".meta")]
    storage.download([(f, os.path.join(local_dir, f.rsplit("/", 1)[-1])) for f in files],
                     f"warm start from {storage.redact(prefix)}")
    return os.path.join(local_dir, prefix.rsplit("/", 1)[-1])
