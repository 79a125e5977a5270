"""Locations as fsspec URLs: `file://`, plain paths, `memory://`, `s3://`, `gs://`."""

from __future__ import annotations

import os
import re
import uuid

import fsspec
from fsspec.core import url_to_fs

_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")


def redact(url: str) -> str:
    """The URL without any `user:secret@` part, for logs and error messages."""
    return _CREDENTIALS.sub("***@", str(url))


def is_local(url: str) -> bool:
    fs, _ = url_to_fs(str(url))
    return "file" in fs.protocol or "local" in fs.protocol


def local_path(url: str) -> str:
    """The OS path of a local URL (`file:///x` or `/x`)."""
    fs, path = url_to_fs(str(url))
    return path


def join(base: str, *parts: str) -> str:
    return "/".join([str(base).rstrip("/"), *[p.strip("/") for p in parts]])


def exists(url: str, **options) -> bool:
    fs, path = url_to_fs(str(url), **options)
    return fs.exists(path)


def glob(pattern: str, **options) -> list[str]:
    """Files matching `pattern` (a URL with optional wildcards), as full URLs, sorted."""
    fs, path = url_to_fs(str(pattern), **options)
    if fs.isdir(path):
        matches = [p for p in fs.find(path)]
    elif any(ch in path for ch in "*?["):
        matches = fs.glob(path)
    else:
        matches = [path] if fs.exists(path) else []
    matches = [m for m in matches if not fs.isdir(m)]
    return sorted(fs.unstrip_protocol(m) if not is_local(pattern) else m for m in matches)


def size(url: str, **options) -> int:
    fs, path = url_to_fs(str(url), **options)
    return fs.size(path)


def fetch(url: str, dest_dir: str, **options) -> str:
    """A local path holding `url` (file or directory): the path itself when local."""
    if is_local(url):
        return local_path(url)
    fs, path = url_to_fs(str(url), **options)
    target = os.path.join(dest_dir, os.path.basename(path.rstrip("/")) or "object")
    if fs.isdir(path):
        fs.get(path.rstrip("/") + "/", target + "/", recursive=True)
    else:
        fs.get(path, target)
    return target


def next_version(base: str, **options) -> int:
    """One more than the highest numeric version directory under `base` (TF Serving layout)."""
    fs, path = url_to_fs(str(base), **options)
    if not fs.exists(path):
        return 1
    names = [os.path.basename(p.rstrip("/")) for p in fs.ls(path, detail=False)]
    return max([int(n) for n in names if n.isdigit()], default=0) + 1


def publish_dir(local_dir: str, base: str, **options) -> tuple[int, str]:
    """Copies a finished local directory to `base/<next version>`; no reader sees it half-done.

    Locally the copy is made under a non-numeric name and renamed into place (TF Serving
    ignores non-numeric names). On object stores `saved_model.pb` is uploaded last, so the
    version is loadable from the moment it appears.
    """
    fs, root = url_to_fs(str(base), **options)
    fs.makedirs(root, exist_ok=True)
    if is_local(base):
        staging = os.path.join(root, f".tmp-{uuid.uuid4().hex}")
        fs.put(local_dir.rstrip("/") + "/", staging + "/", recursive=True)
        while True:
            version = next_version(root)
            try:
                os.rename(staging, os.path.join(root, str(version)))
                return version, os.path.join(root, str(version))
            except OSError:
                continue
    version = next_version(base, **options)
    target = f"{root.rstrip('/')}/{version}"
    files = sorted(
        os.path.relpath(os.path.join(d, f), local_dir)
        for d, _, fs_ in os.walk(local_dir) for f in fs_
    )
    files.sort(key=lambda rel: rel == "saved_model.pb")
    for rel in files:
        fs.put_file(os.path.join(local_dir, rel), f"{target}/{rel}")
    return version, fs.unstrip_protocol(target)
