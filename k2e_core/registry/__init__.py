"""The export base as a model registry, on plain storage: no database.

    <base>/<version>/k2e-record.json       the record of a serving version
    <base>/candidates/<run id>/            a candidate the gate did not bless: kept, never served
    <base>/.k2e/decisions/<run id>.json    the gate's decision for a run; a retried run reuses it

A record says what a version is and whether to trust it: its metrics and the evaluation data
they were measured on, the run that made it, its warm-start source, the gate's checks, whether
it is blessed and why, whether it is pinned, and every change made by hand since.
"""

from __future__ import annotations

import datetime
import getpass
import json
import logging
import tempfile

from k2e_core import storage
from k2e_core.errors import SpecError
from k2e_core.records import VersionRecord
from k2e_core.storage import publish

log = logging.getLogger("k2e.registry")

RECORD_FORMAT = "k2e-record/1"
DECISIONS = ".k2e/decisions"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def new_record(decision: dict, source: dict) -> dict:
    """A candidate's record from the gate's decision and where the candidate came from."""
    return VersionRecord(
        **{
            "format": RECORD_FORMAT,
            "run_id": decision["run_id"],
            "created": _now(),
            "metrics": decision["metrics"],
            "eval_data": decision["eval_data"],
            "source": {k: v for k, v in source.items() if k != "warm_start"},
            "warm_start": source.get("warm_start"),
            "gate": {
                k: decision[k]
                for k in ("passed", "checks", "baseline", "premade_baseline")
                if k in decision
            },
            "blessed": decision["blessed"],
            "by": decision["by"],
            "reason": decision["reason"],
            "pinned": False,
            "history": [
                {
                    "at": decision["decided_at"],
                    "action": "blessed" if decision["blessed"] else "not blessed",
                    "by": decision["by"],
                    "reason": decision["reason"],
                }
            ],
        }
    ).dump()


# --------------------------------------------------------------------------- reading


def read_record(url: str) -> dict | None:
    """The record of the version or candidate at `url`; None when it is not complete."""
    manifest = publish.read_manifest(url)
    if manifest is None:
        return None
    try:
        record = json.loads(storage.read_bytes(storage.join(url, publish.RECORD)))
    except FileNotFoundError:  # published before records were kept
        record = {
            "format": RECORD_FORMAT,
            "run_id": manifest.get("run_id"),
            "created": manifest.get("created"),
            "metrics": manifest.get("metrics", {}),
            "source": manifest.get("source", {}),
            "warm_start": manifest.get("source", {}).get("warm_start"),
            "blessed": "candidate" not in manifest,
            "by": "publish",
            "reason": "published before the registry kept records",
            "pinned": False,
            "history": [],
        }
    return {
        **record,
        "url": url,
        "name": _name_of(url, manifest),
        "version": manifest.get("version"),
    }


def _name_of(url: str, manifest: dict) -> str:
    if "candidate" in manifest:
        return f"{publish.CANDIDATES}/{manifest['candidate']}"
    return str(manifest.get("version") or url.rstrip("/").rsplit("/", 1)[-1])


def entries(base: str) -> list[dict]:
    """Every version (ascending) and then every kept candidate (oldest first), as records."""
    found = [read_record(storage.join(base, str(v))) for v in publish.numbered(base)]
    candidates = [
        read_record(storage.join(base, publish.CANDIDATES, name))
        for name in storage.listdir(storage.join(base, publish.CANDIDATES))
        if not name.startswith(".")
    ]
    candidates = sorted((c for c in candidates if c), key=lambda r: r.get("created") or "")
    return [r for r in found if r] + candidates


def latest_blessed(base: str, exclude_run: str | None = None) -> dict | None:
    """The newest blessed version's record (not one made by `exclude_run`)."""
    for version in reversed(publish.numbered(base)):  # read_record skips incomplete ones
        record = read_record(storage.join(base, str(version)))
        if record and record.get("blessed") and record.get("run_id") != exclude_run:
            return record
    return None


def _entry(base: str, name: str) -> dict:
    name = name.strip("/")
    record = read_record(storage.join(base, name)) if name else None
    if record is None and "/" not in name:
        record = read_record(storage.join(base, publish.CANDIDATES, name))
    if record is None:
        names = [e["name"] for e in entries(base)]
        raise SpecError(
            "name",
            f"{name!r} is not a version or candidate under {storage.redact(base)}",
            f"use one of {names[-8:]}",
        )
    return record


# --------------------------------------------------------------------------- changes by hand


def _write_record(record: dict) -> None:
    body = {k: v for k, v in record.items() if k != "url"}
    storage.write_bytes(
        storage.join(record["url"], publish.RECORD),
        json.dumps(body, indent=1, sort_keys=True).encode(),
    )


def _changed(record: dict, action: str, why: str, **fields) -> dict:
    event = {"at": _now(), "action": action, "by": "hand", "user": _user(), "reason": why}
    return {**record, **fields, "history": [*record.get("history", []), event]}


def bless(base: str, name: str, reason: str) -> dict:
    """Blesses a version, or promotes a kept candidate to the next version (blessed by hand)."""
    _need_reason(reason)
    record = _entry(base, name)
    if record["version"] is not None:
        record = _changed(record, "blessed", reason, blessed=True, by="hand", reason=reason)
        _write_record(record)
        log.info("version %s blessed by hand: %s", record["version"], reason)
        return record
    return _promote(base, record, reason)


def _promote(base: str, record: dict, reason: str) -> dict:
    manifest = publish.read_manifest(record["url"])
    promoted = _changed(
        record,
        "blessed",
        reason,
        blessed=True,
        by="hand",
        reason=reason,
        promoted_from=record["name"],
    )
    promoted.pop("url")
    with tempfile.TemporaryDirectory(prefix="k2e-promote-") as tmp:
        publish.download_version(record["url"], tmp)
        result = publish.publish(
            tmp,
            base,
            record["run_id"],
            metrics=manifest.get("metrics"),
            source=manifest.get("source"),
            record=promoted,
        )
    decision = decision_for(base, record["run_id"])
    if decision is not None:  # a retry of that run now finds the version, not a candidate
        save_decision(
            base, record["run_id"], {**decision, "blessed": True, "by": "hand", "reason": reason}
        )
    _remove(record["url"])
    log.info("candidate %s promoted to version %d: %s", record["name"], result["version"], reason)
    return read_record(result["export_path"])


def unbless(base: str, name: str, reason: str) -> dict:
    """Marks a version as not to be trusted: `latest` warm starts and gates skip it. TF
    Serving's own version policy still sees its number (move or pin versions there)."""
    _need_reason(reason)
    record = _entry(base, name)
    if record["version"] is None:
        raise SpecError(
            "name", f"{record['name']} is a candidate, which is never blessed", "name a version"
        )
    record = _changed(record, "unblessed", reason, blessed=False, by="hand", reason=reason)
    _write_record(record)
    log.info("version %s unblessed by hand: %s", record["version"], reason)
    return record


def pin(base: str, name: str, pinned: bool, reason: str = "") -> dict:
    """A pinned version or candidate is never removed by retention."""
    record = _entry(base, name)
    record = _changed(record, "pinned" if pinned else "unpinned", reason, pinned=pinned)
    _write_record(record)
    return record


def _need_reason(reason: str) -> None:
    if not (reason or "").strip():
        raise SpecError("--reason", "is required", 'say why, e.g. --reason "fixes label bug"')


# --------------------------------------------------------------------------- retention


def prune(base: str, keep: int) -> list[str]:
    """Removes all but the newest `keep` versions and `keep` candidates; never the latest
    blessed version or a pinned one. Returns the names removed."""
    if keep < 1:
        raise SpecError("export.keep", f"must be at least 1, got {keep}", "keep 1 or more")
    records = entries(base)
    versions = [r for r in records if r["version"] is not None]
    candidates = [r for r in records if r["version"] is None]
    latest = latest_blessed(base)
    protected = {latest["name"]} if latest else set()
    removed = []
    for group in (versions, candidates):
        for record in group[:-keep]:
            if record["name"] in protected or record.get("pinned"):
                continue
            _remove(record["url"])
            removed.append(record["name"])
    if removed:
        log.info("retention (keep %d): removed %s", keep, ", ".join(removed))
    return removed


def _remove(url: str) -> None:
    """The manifest goes first: from then on no reader takes it for a complete version."""
    storage.remove(storage.join(url, publish.MANIFEST))
    storage.remove(url, recursive=True)


# --------------------------------------------------------------------------- decisions


def _decision_url(base: str, run_id: str) -> str:
    return storage.join(base, DECISIONS, publish.safe_name(run_id) + ".json")


def decision_for(base: str, run_id: str) -> dict | None:
    try:
        return json.loads(storage.read_bytes(_decision_url(base, run_id)))
    except FileNotFoundError:
        return None


def save_decision(base: str, run_id: str, decision: dict) -> None:
    storage.write_bytes(
        _decision_url(base, run_id), json.dumps(decision, indent=1, sort_keys=True).encode()
    )


# --------------------------------------------------------------------------- listing


def table(records: list[dict]) -> str:
    """The registry as a text table: one row per version or candidate."""
    metric_names = sorted(
        {
            k
            for r in records
            for k, v in (r.get("metrics") or {}).items()
            if k != "global_step" and isinstance(v, (int, float))
        }
    )
    premade = [premade_text(r, metric_names) for r in records]
    beside = ["pre-made baseline"] if any(premade) else []
    header = ["name", "blessed", "pinned", "created", "step", *metric_names, "warm start"]
    header += [*beside, "reason"]
    rows = [header]
    for r, baseline in zip(records, premade):
        warm = r.get("warm_start") or {}
        rows.append(
            [
                r["name"],
                "yes" if r.get("blessed") else "no",
                "yes" if r.get("pinned") else "",
                (r.get("created") or "")[:19].replace("T", " "),
                str((r.get("source") or {}).get("global_step", "")),
                *[_number((r.get("metrics") or {}).get(m)) for m in metric_names],
                f"v{warm['version']}" if warm.get("version") else (warm.get("from") or "none"),
                *([baseline] if beside else []),
                r.get("reason", ""),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1] for row in rows
    )


def premade_text(record: dict, metric_names: list) -> str:
    """The pre-made baseline a version was judged beside: its Estimator and its values of
    the version's metrics ('LinearClassifier accuracy 0.9333 loss 0.2101'); '' if none."""
    premade = (record.get("gate") or {}).get("premade_baseline")
    if not premade:
        return ""
    values = premade.get("metrics") or {}
    shown = [f"{m} {_number(values[m])}" for m in metric_names if m in values]
    return " ".join([premade["estimator"], *shown])


def _number(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "" if value is None else str(value)
