"""Where a new model_dir's first weights come from, for both trainers: `warm_start` in the
spec names the source: `latest` (the latest blessed version in the registry), a version
number, a version's URL, or a checkpoint (a prefix, or a model_dir's latest). It is located
(`locate`, fetching nothing), fetched as a local checkpoint prefix (`resolve`), and what was
used is recorded in `model_dir/keras/k2e-warm-start.json` (`save_record`) and, through the
export step, in the version's record. How the weights go into the model is the trainer's."""

from __future__ import annotations

import json
import logging
import os

from k2e_core import registry, storage
from k2e_core.errors import SpecError
from k2e_core.inputs import data
from k2e_core.records import WarmStartRecord
from k2e_core.storage import publish
from k2e_core.storage.checkpoints import STATE, latest_checkpoint_name
from k2e_core.trainer import Seed

log = logging.getLogger("k2e.warm_start")

RECORD = os.path.join(data.KERAS_DIR, "k2e-warm-start.json")
FIX = (
    "set warm_start=none to start from the model's own weights, or name a checkpoint of this model"
)


def locate(spec) -> tuple[str, dict] | None:
    """(URL, record) of `spec.warm_start`'s source, found without fetching it: the URL of a
    published version, or a checkpoint prefix. None: nothing to start from."""
    value = spec.warm_start
    if not value:
        return None
    if value == "latest" or value.isdigit():
        if spec.export is None:
            raise SpecError(
                "warm_start",
                f"{value!r} names a published version, but the spec has no export section",
                "add export.base, or give a checkpoint URL",
            )
        base = spec.path(spec.export.base)
        if value == "latest":
            blessed = registry.latest_blessed(base)
            if blessed is None:
                log.info(
                    "warm start: no blessed version under %s yet; starting from the "
                    "model's own weights",
                    storage.redact(base),
                )
                return None
            version = blessed["version"]
        else:
            version = int(value)
        published = publish.versions(base)
        if version not in published:
            raise SpecError(
                "warm_start",
                f"no version {version} under {storage.redact(base)}",
                f"use 'latest' or one of {published[-5:]}",
            )
        url = storage.join(base, str(version))
        return url, {"from": value, "version": version, "url": storage.redact(url)}
    url = spec.path(value)
    if storage.exists(storage.join(url, "saved_model.pb")):
        return url, {"from": "version", "url": storage.redact(url)}
    prefix = _checkpoint_prefix(url)
    return prefix, {"from": "checkpoint", "url": storage.redact(prefix)}


def seed_from_source(model, model_dir: str, spec, staging_dir: str, apply, optimizer_state) -> Seed:
    """A new model_dir's start: `spec.warm_start` resolved, its weights put into `model` by
    the trainer's `apply(model, prefix, record)`, its optimizer state taken by the trainer's
    `optimizer_state(model, prefix, record, staging_dir)` (which notes it in the record), and
    the record kept in model_dir. A source that does not fit stops the job, or with
    `warm_start_mismatch: fresh` is skipped and the record says so."""
    found = resolve(spec, staging_dir)
    if found is None:
        save_record(model_dir, None)
        return Seed()
    prefix, record = found
    state = None
    try:
        apply(model, prefix, record)
        log.info("warm start from %s", record["url"])
        state = optimizer_state(model, prefix, record, staging_dir)
    except SpecError as err:
        if spec.warm_start_mismatch != "fresh":
            raise
        log.warning("warm start skipped, starting from the model's own weights: %s", err.problem)
        record = {**record, "skipped": err.problem}
    save_record(model_dir, record)
    return Seed(record, state)


def resolve(spec, staging_dir: str) -> tuple[str, dict] | None:
    """(local checkpoint prefix, record) for `spec.warm_start`; None: nothing to start from."""
    found = locate(spec)
    if found is None:
        return None
    url, record = found
    if record["from"] == "checkpoint":
        return fetch_prefix(url, staging_dir), record
    return version_checkpoint(url, staging_dir), record


def fetch_optimizer_state(record: dict | None, staging_dir: str) -> str | None:
    """`optimizer_state` of a saved record, fetched again (a later step, another process)."""
    if not record or not record.get("optimizer_state"):
        return None
    return fetch_prefix(record["optimizer_state"], os.path.join(staging_dir, "optimizer_state"))


def training_checkpoint_of(version_url: str) -> str | None:
    """The training checkpoint a version was exported from, where it is still there."""
    source = (registry.read_record(version_url) or {}).get("source") or {}
    if not (source.get("model_dir") and source.get("checkpoint")):
        return None
    prefix = storage.join(source["model_dir"], source["checkpoint"])
    try:
        return prefix if storage.exists(prefix + ".index") else None
    except (OSError, ValueError):  # a pod-local path, another store: not reachable from here
        return None


def save_record(model_dir: str, record: dict | None) -> None:
    """Writes the record (None removes a stale one)."""
    path = os.path.join(model_dir, RECORD)
    if record is None:
        if os.path.exists(path):
            os.remove(path)
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(WarmStartRecord.model_validate(record).dump(), f)


def load_record(model_dir: str) -> dict | None:
    path = os.path.join(model_dir, RECORD)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def version_checkpoint(version_url: str, staging_dir: str) -> str:
    """A local checkpoint prefix of a published version's variables."""
    local = storage.fetch(
        storage.join(version_url, "variables"), os.path.join(staging_dir, "warm_start")
    )
    return os.path.join(local, "variables")


def _checkpoint_prefix(url: str) -> str:
    """A checkpoint prefix from a prefix itself or from a model_dir (its latest checkpoint)."""
    state = storage.join(url, STATE)
    latest = storage.exists(state) and latest_checkpoint_name(
        storage.read_bytes(state).decode("utf-8", "replace")
    )
    if latest:
        return storage.join(url, latest)
    if storage.exists(url + ".index"):
        return url
    raise SpecError(
        "warm_start",
        f"no checkpoint at {storage.redact(url)}{storage.why_missing(url)}",
        "give a checkpoint prefix (.../model.ckpt-1000), a model_dir, a published "
        "version's URL, 'latest' or 'none'",
    )


def fetch_prefix(prefix: str, staging_dir: str) -> str:
    if storage.is_local(prefix):
        return storage.local_path(prefix)
    local_dir = os.path.join(staging_dir, "warm_start")
    files = [f for f in storage.glob(prefix + ".*") if not f.endswith(".meta")]
    storage.download(
        [(f, os.path.join(local_dir, f.rsplit("/", 1)[-1])) for f in files],
        f"warm start from {storage.redact(prefix)}",
    )
    return os.path.join(local_dir, prefix.rsplit("/", 1)[-1])
