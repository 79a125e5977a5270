"""Publishing SavedModels in TF Serving's layout, so that no reader sees half a version.

    <base>/<version>/saved_model.pb, variables/, assets/, k2e-manifest.json, k2e-record.json
    <base>/candidates/<run id>/...              (kept, not served: see k2e_core.registry)
    <base>/.k2e/claims/<version>/<run id>       (who is publishing which version)

A version counts once its manifest (every file's size and sha256, the run, metrics) is
there, with its registry record beside it. Local file systems: the version is assembled
under a non-numeric name and renamed into place. Object stores: variables and assets first,
`saved_model.pb` after them, the record, the manifest last. A run publishes at most one
version: a retry with the same run id finishes or returns the version its claim names. Two
runs never share a version: a run proceeds only if, after writing its own claim, it sees no
other claim for that number.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import random
import re
import shutil
import time
import uuid

from k2e_core import storage
from k2e_core.records import Manifest

log = logging.getLogger("k2e.publish")

MANIFEST = "k2e-manifest.json"
MANIFEST_FORMAT = "k2e-manifest/1"
RECORD = "k2e-record.json"
CANDIDATES = "candidates"
CLAIMS = ".k2e/claims"


class PublishError(storage.StorageError):
    """Publishing failed; no new complete version is visible."""


def safe_name(run_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", run_id)[:200]


def manifest_for(local_dir: str, run_id: str, metrics=None, source=None) -> dict:
    files = {}
    for rel in storage.local_files(local_dir):
        path = os.path.join(local_dir, rel)
        sha, md5 = storage.digests(path)
        files[rel] = {"size": os.path.getsize(path), "sha256": sha, "md5": md5}
    dirs = sorted(
        os.path.relpath(os.path.join(d, sub), local_dir)
        for d, subs, _ in os.walk(local_dir)
        for sub in subs
    )
    return Manifest(
        format=MANIFEST_FORMAT,
        run_id=run_id,
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        files=files,
        dirs=dirs,
        metrics=metrics or {},
        source=source or {},
    ).dump()


def read_manifest(version_url: str) -> dict | None:
    try:
        return json.loads(storage.read_bytes(storage.join(version_url, MANIFEST)))
    except FileNotFoundError:
        return None


def versions(base: str) -> list[int]:
    """Complete (manifested) versions under `base`, ascending."""
    return [v for v in numbered(base) if storage.exists(storage.join(base, str(v), MANIFEST))]


def numbered(base: str) -> list[int]:
    """Numeric names under `base`, ascending, complete or not."""
    return sorted(int(n) for n in storage.listdir(base) if n.isdigit())


def _claims(base: str) -> dict[int, list[str]]:
    """{version: runs holding a claim on it}; withdrawn claims leave no holder."""
    root = storage.join(base, CLAIMS)
    claims = {
        int(v): storage.listdir(storage.join(root, v)) for v in storage.listdir(root) if v.isdigit()
    }
    return {v: holders for v, holders in claims.items() if holders}


def _claim(base: str, run_id: str) -> tuple[int, bool]:
    """(version, resumed): this run's earlier claim, or a new number no other run holds."""
    mine = safe_name(run_id)
    for version, holders in sorted(_claims(base).items()):
        if mine in holders:
            return version, True
    for attempt in range(20):
        claims = _claims(base)
        version = max([0, *numbered(base), *claims]) + 1
        marker = storage.join(base, CLAIMS, str(version), mine)
        storage.write_bytes(marker, json.dumps({"run_id": run_id, "at": time.time()}).encode())
        holders = storage.listdir(storage.join(base, CLAIMS, str(version)))
        if holders == [mine]:
            return version, False
        storage.remove(marker)  # another run claimed this number at the same time
        time.sleep(random.uniform(0.05, 0.3) * (attempt + 1))
    raise PublishError(
        f"could not claim a version under {storage.redact(base)}: too many concurrent publishers"
    )


def publish(local_dir: str, base: str, run_id: str, metrics=None, source=None, record=None) -> dict:
    """Publishes `local_dir` as one version under `base`; idempotent per `run_id`.
    `record`: the registry record written beside the manifest (its `version` is filled in)."""
    manifest = manifest_for(local_dir, run_id, metrics, source)
    version, resumed = _claim(base, run_id)
    target = storage.join(base, str(version))
    existing = read_manifest(target) if resumed else None
    if existing is not None and existing.get("run_id") == run_id:
        log.info("version %d already published by run %s", version, run_id)
        return _result(version, target, existing, reused=True)
    manifest["version"] = version
    if record is not None:
        record = {**record, "version": version, "name": str(version)}
    if resumed:
        log.info("resuming the publish of version %d for run %s", version, run_id)
    _commit(local_dir, base, str(version), manifest, record, f"version {version}")
    log.info("published version %d at %s", version, storage.redact(target))
    return _result(version, target, manifest, reused=False)


def keep_candidate(
    local_dir: str, base: str, run_id: str, metrics=None, source=None, record=None
) -> dict:
    """Keeps `local_dir` under `<base>/candidates/<run id>`: complete like a version, but not
    a number, so TF Serving never loads it. Idempotent per `run_id`."""
    name = safe_name(run_id)
    rel = f"{CANDIDATES}/{name}"
    target = storage.join(base, CANDIDATES, name)
    existing = read_manifest(target)
    if existing is not None and existing.get("run_id") == run_id:
        log.info("candidate %s already kept", name)
        return _result(None, target, existing, reused=True)
    manifest = manifest_for(local_dir, run_id, metrics, source)
    manifest["candidate"] = name
    if record is not None:
        record = {**record, "version": None, "name": rel}
    _commit(local_dir, base, rel, manifest, record, f"candidate {name}")
    log.info("kept candidate %s at %s (not served)", name, storage.redact(target))
    return _result(None, target, manifest, reused=False)


def _commit(local_dir, base, rel, manifest, record, what):
    target = storage.join(base, rel)
    try:
        if storage.is_local(base):
            _publish_local(local_dir, storage.local_path(base), rel, manifest, record)
        else:
            _publish_object_store(local_dir, target, manifest, record)
    except Exception as exc:
        if not storage.is_local(base):
            _discard(target)
        raise PublishError(
            f"publishing {what} to {storage.redact(base)} failed "
            f"({exc}); nothing new is visible, rerun to retry"
        ) from exc


def _result(version, target, manifest, reused):
    return {
        "version": version,
        "export_path": target,
        "manifest": storage.join(target, MANIFEST),
        "reused": reused,
        "files": len(manifest["files"]),
        "bytes": sum(f["size"] for f in manifest["files"].values()),
    }


def _publish_local(local_dir, base_path, rel, manifest, record):
    staging = os.path.join(
        base_path, ".k2e", "staging", f"{rel.replace('/', '_')}-{uuid.uuid4().hex}"
    )
    shutil.copytree(local_dir, staging)
    _verify_local(staging, manifest)
    if record is not None:
        with open(os.path.join(staging, RECORD), "w") as f:
            json.dump(record, f, indent=1, sort_keys=True)
    with open(os.path.join(staging, MANIFEST), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    final = os.path.join(base_path, rel)
    if os.path.isdir(final):  # an earlier attempt of this run, not committed: replace it
        shutil.rmtree(final)
    os.makedirs(os.path.dirname(final), exist_ok=True)
    os.rename(staging, final)


def _verify_local(directory, manifest):
    for rel, want in manifest["files"].items():
        path = os.path.join(directory, rel)
        if os.path.getsize(path) != want["size"] or storage.sha256_file(path) != want["sha256"]:
            raise PublishError(f"{rel} changed while publishing")


def _publish_object_store(local_dir, target, manifest, record):
    files = list(manifest["files"])
    first = [f for f in files if f != "saved_model.pb"]
    label = f"publish {target.rstrip('/').rsplit('/', 1)[-1]}"
    storage.upload([(os.path.join(local_dir, f), storage.join(target, f)) for f in first], label)
    if "saved_model.pb" in files:
        storage.upload(
            [(os.path.join(local_dir, "saved_model.pb"), storage.join(target, "saved_model.pb"))],
            label,
        )
    verify_remote(target, manifest)
    if record is not None:
        storage.write_bytes(
            storage.join(target, RECORD), json.dumps(record, indent=1, sort_keys=True).encode()
        )
    storage.write_bytes(
        storage.join(target, MANIFEST), json.dumps(manifest, indent=1, sort_keys=True).encode()
    )


def verify_remote(target: str, manifest: dict) -> None:
    """Every manifest file is at `target` with its size and checksum.

    The checksum is the MD5 the store reports (S3 single-part ETag, GCS md5Hash); where it
    reports none (multipart uploads, memory://), the object is read back and hashed.
    """
    found = storage.find_info(target)
    bad = []
    for rel, want in manifest["files"].items():
        info = found.get(rel)
        if info is None or int(info.get("size") or 0) != want["size"]:
            bad.append(rel)
            continue
        md5 = storage.stored_md5(info)
        if md5 is not None:
            ok = md5 == want["md5"]
        else:
            data = storage.read_bytes(storage.join(target, rel))
            ok = hashlib.sha256(data).hexdigest() == want["sha256"]
        if not ok:
            bad.append(rel)
    if bad:
        raise PublishError(f"uploaded files do not match the manifest: {bad[:5]}")


def _discard(target):
    try:
        storage.remove(target, recursive=True)
    except Exception as exc:  # noqa: BLE001 - best effort; the missing manifest already says "incomplete"
        log.warning(
            "could not remove the incomplete version at %s (%s)", storage.redact(target), exc
        )


def download_version(version_url: str, local_dir: str) -> dict:
    """Downloads a published version and checks every file against its manifest."""
    manifest = read_manifest(version_url)
    if manifest is None:
        raise PublishError(
            f"{storage.redact(version_url)} has no {MANIFEST}: not a complete version"
        )
    pairs = [
        (storage.join(version_url, rel), os.path.join(local_dir, rel)) for rel in manifest["files"]
    ]
    stats = storage.download(pairs, f"download {storage.redact(version_url)}")
    for rel, want in manifest["files"].items():
        path = os.path.join(local_dir, rel)
        if os.path.getsize(path) != want["size"] or storage.sha256_file(path) != want["sha256"]:
            raise PublishError(f"downloaded {rel} does not match the manifest")
    for rel in manifest.get("dirs", []):  # object stores drop empty directories (assets/)
        os.makedirs(os.path.join(local_dir, rel), exist_ok=True)
    return {**stats, "manifest": manifest}
