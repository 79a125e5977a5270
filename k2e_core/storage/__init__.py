"""Locations as fsspec URLs (`file://` or plain paths, `memory://`, `s3://`, `gs://`).

Options per protocol (endpoint, credentials, region) come from the job spec's `storage`
section or from the environment (AWS_*, GOOGLE_APPLICATION_CREDENTIALS, ...); they are never
logged or returned. Transient errors are retried with backoff, for at most `retries` attempts
and `retry_seconds` in all (k2e is the one layer that retries: S3 clients are given one
attempt each and a 10 s connect timeout unless the options say otherwise); permanent ones
(missing bucket or object, access denied) raise at once. Many-file transfers run
concurrently and log files, bytes and MB/s.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import logging
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import tenacity
from fsspec.core import url_to_fs

log = logging.getLogger("k2e.storage")

_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")
_settings = contextvars.ContextVar("k2e_storage", default=None)

DEFAULT_RETRIES = 5
DEFAULT_RETRY_SECONDS = 60.0
DEFAULT_CONCURRENCY = 16
#: Under the user's own options: botocore and s3fs would otherwise retry inside each of
#: k2e's attempts (5 x 5 tries), so that a refused connection took 18 s to fail.
S3_CLIENT_DEFAULTS = {"config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 10}}


class StorageError(OSError):
    """A storage operation failed for good (after retries, or a permanent error)."""


def redact(url: str) -> str:
    """The URL without any `user:secret@` part, for logs and error messages."""
    return _CREDENTIALS.sub("***@", str(url))


@contextlib.contextmanager
def configured(
    options: dict | None = None,
    retries: int = DEFAULT_RETRIES,
    concurrency: int = DEFAULT_CONCURRENCY,
    retry_seconds: float = DEFAULT_RETRY_SECONDS,
):
    """Storage options per protocol (`{"s3": {...}}`) for the code inside."""
    token = _settings.set(
        {
            "options": options or {},
            "retries": retries,
            "concurrency": concurrency,
            "retry_seconds": retry_seconds,
        }
    )
    try:
        yield
    finally:
        _settings.reset(token)


def _setting(name, default):
    settings = _settings.get()
    return settings[name] if settings else default


def filesystem(url: str):
    """(fsspec filesystem, path) for `url` with the configured options for its protocol."""
    protocol = str(url).split("://", 1)[0] if "://" in str(url) else "file"
    options = _setting("options", {})
    aliases = {"gs": "gcs", "gcs": "gs", "s3a": "s3", "file": "local"}
    opts = options.get(protocol) or options.get(aliases.get(protocol, ""), {}) or {}
    if protocol not in ("s3", "s3a"):
        return url_to_fs(str(url), **opts)
    fs, path = url_to_fs(str(url), **_with_defaults(opts, S3_CLIENT_DEFAULTS))
    fs.retries = 1  # s3fs' own retry loop (a class attribute, not an option)
    return fs, path


def _with_defaults(options: dict, defaults: dict) -> dict:
    merged = dict(options)
    for key, value in defaults.items():
        if key not in merged:
            merged[key] = value
        elif isinstance(value, dict) and isinstance(merged[key], dict):
            merged[key] = _with_defaults(merged[key], value)
    return merged


def is_local(url: str) -> bool:
    return "://" not in str(url) or str(url).startswith(("file://", "local://"))


def local_path(url: str) -> str:
    """The OS path of a local URL (`file:///x` or `/x`)."""
    return filesystem(url)[1]


def join(base: str, *parts: str) -> str:
    return "/".join([str(base).rstrip("/"), *[p.strip("/") for p in parts if p]])


def _url(fs, path: str, like: str) -> str:
    return path if is_local(like) else fs.unstrip_protocol(path)


# --------------------------------------------------------------------------- retries

#: Errors of the client's configuration, which no retry can mend.
_CONFIGURATION_ERRORS = {
    "NoCredentialsError",
    "PartialCredentialsError",
    "NoRegionError",
    "ParamValidationError",
    "InvalidEndpointError",
    "UnknownSignatureVersionError",
    "DefaultCredentialsError",
    "RefreshError",
}


#: A client error's text that no retry mends; a status code only as a number of its own (a
#: port such as 40365 in an unreachable endpoint's URL made a refused connection permanent).
_PERMANENT = re.compile(r"AccessDenied|NoSuchBucket|(?<![\d.:])40[34](?!\d)")


def is_transient(exc: BaseException) -> bool:
    """Timeouts, connection failures, 5xx and throttling: worth another try."""
    if isinstance(
        exc,
        (
            FileNotFoundError,
            PermissionError,
            IsADirectoryError,
            NotADirectoryError,
            FileExistsError,
            ValueError,
            TypeError,
            KeyError,
        ),
    ):
        return False
    if isinstance(exc, (ConnectionError, TimeoutError, asyncio.TimeoutError)):
        return True
    if type(exc).__name__ in _CONFIGURATION_ERRORS:
        return False
    module = type(exc).__module__
    if module.startswith(("botocore", "aiohttp", "urllib3", "requests", "google.api_core")):
        return not _PERMANENT.search(str(exc))
    return isinstance(exc, OSError)


def retrying(operation: str):
    """A tenacity retrier for one storage operation: the configured attempts, within the
    configured seconds."""
    attempts = max(1, int(_setting("retries", DEFAULT_RETRIES)))
    seconds = float(_setting("retry_seconds", DEFAULT_RETRY_SECONDS))

    def before_sleep(state):
        log.warning(
            "%s failed (%s); retry %d of %d in %.1fs",
            operation,
            _short(state.outcome.exception()),
            state.attempt_number,
            attempts - 1,
            state.next_action.sleep,
        )

    return tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_transient),
        stop=tenacity.stop_after_attempt(attempts) | tenacity.stop_before_delay(seconds),
        wait=tenacity.wait_exponential_jitter(initial=0.2, max=5.0),
        before_sleep=before_sleep,
        reraise=True,
    )


def call(operation: str, fn, *args, **kwargs):
    """`fn(*args, **kwargs)` with retries; failures become one-line StorageErrors that say
    how long was spent on them."""
    retrier = retrying(operation)
    began = time.perf_counter()
    try:
        return retrier(fn, *args, **kwargs)
    except (FileNotFoundError, PermissionError):
        raise
    except Exception as exc:  # noqa: BLE001 - every storage backend raises its own types
        tries = retrier.statistics.get("attempt_number", 1)
        retried = tries > 1 or (is_transient(exc) and int(_setting("retries", DEFAULT_RETRIES)) > 1)
        spent = (
            f"; gave up after {tries} attempt{'s' if tries > 1 else ''} in "
            f"{time.perf_counter() - began:.1f}s (storage.retries, storage.retry_seconds)"
            if retried
            else ""
        )
        raise StorageError(f"{operation} failed: {_short(exc)}{spent}") from exc


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return redact(f"{type(exc).__name__}: {text[0] if text else ''}")


# --------------------------------------------------------------------------- small operations


def _fresh(url: str):
    """(filesystem, path) without cached listings: another step may have written there."""
    fs, path = filesystem(url)
    if not is_local(url):
        fs.invalidate_cache(path)
    return fs, path


def exists(url: str) -> bool:
    fs, path = _fresh(url)
    return call(f"checking {redact(url)}", fs.exists, path)


def isdir(url: str) -> bool:
    fs, path = filesystem(url)
    return call(f"checking {redact(url)}", fs.isdir, path)


def glob(pattern: str) -> list[str]:
    """Files matching `pattern` (a URL with optional wildcards, or a directory), sorted."""
    fs, path = filesystem(pattern)
    if not is_local(pattern):
        fs.invalidate_cache()
    if call(f"listing {redact(pattern)}", fs.isdir, path):
        matches = fs.find(path)  # files only
    elif any(ch in path for ch in "*?["):
        found = call(f"listing {redact(pattern)}", fs.glob, path, detail=True)
        matches = [p for p, info in found.items() if info.get("type") != "directory"]
    else:
        matches = [path] if call(f"checking {redact(pattern)}", fs.exists, path) else []
    return sorted(_url(fs, m, pattern) for m in matches)


def listdir(url: str) -> list[str]:
    """Names directly under `url` (empty when it does not exist)."""
    fs, path = _fresh(url)
    try:
        entries = call(f"listing {redact(url)}", fs.ls, path, detail=False)
    except FileNotFoundError:
        return []
    return sorted({os.path.basename(e.rstrip("/")) for e in entries} - {""})


def find_info(url: str) -> dict[str, dict]:
    """{path relative to `url`: the store's info (size, ETag, md5Hash...)} for every file."""
    fs, path = _fresh(url)
    try:
        found = call(f"listing {redact(url)}", fs.find, path, detail=True)
    except FileNotFoundError:
        return {}
    root = path.rstrip("/") + "/"
    return {
        p[len(root) :]: info
        for p, info in found.items()
        if p.startswith(root) and info.get("type") != "directory"
    }


def find(url: str) -> dict[str, int]:
    """{path relative to `url`: size} for every file below `url`."""
    return {rel: int(info.get("size") or 0) for rel, info in find_info(url).items()}


def stored_md5(info: dict) -> str | None:
    """The MD5 a store reports for an object, where it reports one (S3 single-part, GCS)."""
    etag = str(info.get("ETag") or info.get("etag") or "").strip('"')
    if etag and "-" not in etag and len(etag) == 32:
        return etag.lower()
    if info.get("md5Hash"):
        import base64

        return base64.b64decode(info["md5Hash"]).hex()
    return None


_BUCKET_PROTOCOLS = ("s3", "s3a", "gs", "gcs")


def bucket_of(url: str) -> str | None:
    """The bucket of an object-store URL (`s3://bucket/...`), else None."""
    protocol, _, rest = str(url).partition("://")
    if protocol not in _BUCKET_PROTOCOLS or not rest:
        return None
    return rest.split("/")[0].rpartition("@")[2] or None


def missing_bucket(url: str) -> str | None:
    """ "bucket 'b' does not exist" when `url` is in a bucket the store does not have."""
    bucket = bucket_of(url)
    if bucket is None:
        return None
    fs, _ = filesystem(url)
    fs.invalidate_cache(bucket)
    try:
        call(f"checking bucket {bucket}", fs.info, bucket)
    except FileNotFoundError:
        return f"bucket {bucket!r} does not exist"
    except PermissionError:
        return f"access to bucket {bucket!r} is denied"
    return None


def why_missing(url: str) -> str:
    """' (bucket 'b' does not exist)' when that is why nothing is at `url`, else ''."""
    try:
        problem = missing_bucket(url)
    except StorageError:
        return ""
    return f" ({problem})" if problem else ""


def unwritable(url: str, *below: str) -> str | None:
    """Why nothing can be written at `url` (and the paths `below` it), checked without
    writing anything; None when it looks writable. Local paths: every path must be a
    directory or not exist yet, under a directory this user may write. Object stores: the
    bucket must exist."""
    if not is_local(url):
        return missing_bucket(url)
    root = os.path.abspath(local_path(url))
    for path in [root, *(os.path.join(root, b) for b in below)]:
        if os.path.exists(path) and not os.path.isdir(path):
            return f"{path} is a file, not a directory"
    existing = root
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return f"{existing} is a file, so nothing can be created under it"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable by this user"
    return None


def read_bytes(url: str) -> bytes:
    fs, path = filesystem(url)
    return call(f"reading {redact(url)}", fs.cat_file, path)


def write_bytes(url: str, data: bytes) -> None:
    fs, path = filesystem(url)
    if is_local(url):
        fs.makedirs(os.path.dirname(path), exist_ok=True)
    call(f"writing {redact(url)}", fs.pipe_file, path, data)


def remove(url: str, recursive: bool = False) -> None:
    fs, path = filesystem(url)
    try:
        call(f"removing {redact(url)}", fs.rm, path, recursive=recursive)
    except FileNotFoundError:
        pass


def size(url: str) -> int:
    fs, path = filesystem(url)
    return call(f"checking {redact(url)}", fs.size, path)


def fetch(url: str, dest_dir: str) -> str:
    """A local path holding `url` (file or directory): the path itself when local."""
    if is_local(url):
        return local_path(url)
    fs, path = filesystem(url)
    target = os.path.join(dest_dir, os.path.basename(path.rstrip("/")) or "object")
    if call(f"checking {redact(url)}", fs.isdir, path):
        files = find(url)
        download(
            [(join(url, rel), os.path.join(target, rel)) for rel in files],
            f"download {redact(url)}",
            sizes={join(url, rel): n for rel, n in files.items()},
        )
    else:
        download([(url, target)], f"download {redact(url)}", sizes={url: size(url)})
    return target


def digests(path: str) -> tuple[str, str]:
    """(sha256, md5) of a local file, read once."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
            md5.update(block)
    return sha.hexdigest(), md5.hexdigest()


def sha256_file(path: str) -> str:
    return digests(path)[0]


# --------------------------------------------------------------------------- transfers


class Progress:
    """Counts a transfer's files and bytes and logs them at most every few seconds."""

    def __init__(self, label: str, files: int, total_bytes: int, every_secs: float = 2.0):
        self.label, self.files, self.total = label, files, total_bytes
        self.done_files = self.done_bytes = 0
        self.every = every_secs
        self.began = self.last = time.perf_counter()
        self.lock = threading.Lock()

    def add(self, nbytes: int) -> None:
        with self.lock:
            self.done_files += 1
            self.done_bytes += nbytes
            now = time.perf_counter()
            if now - self.last >= self.every and self.done_files < self.files:
                self.last = now
                log.info("%s: %s", self.label, self.line(now))

    def line(self, now=None) -> str:
        seconds = max((now or time.perf_counter()) - self.began, 1e-9)
        of_total = f"/{self.total / 1e6:.1f}" if self.total else ""  # 0: sizes not known
        return (
            f"{self.done_files}/{self.files} files, {self.done_bytes / 1e6:.1f}{of_total} MB, "
            f"{self.done_bytes / 1e6 / seconds:.1f} MB/s"
        )

    def finish(self) -> dict:
        seconds = time.perf_counter() - self.began
        if self.files:
            log.info("%s: %s in %.1fs", self.label, self.line(), seconds)
        return {"files": self.done_files, "bytes": self.done_bytes, "seconds": round(seconds, 3)}


def _run_all(label, items, work, concurrency=None):
    """Runs `work(item) -> bytes` for every item, concurrently, stopping at the first failure."""
    workers = max(1, int(concurrency or _setting("concurrency", DEFAULT_CONCURRENCY)))
    total = sum(item[2] for item in items)
    progress = Progress(label, len(items), total)
    if workers == 1 or len(items) <= 1:
        for item in items:
            progress.add(work(item))
        return progress.finish()
    with ThreadPoolExecutor(workers, thread_name_prefix="k2e-transfer") as pool:
        # Each task runs in a copy of this context, so it sees the configured options.
        futures = [pool.submit(contextvars.copy_context().run, work, item) for item in items]
        try:
            for future in futures:
                progress.add(future.result())
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return progress.finish()


def upload(pairs, label="upload", concurrency=None) -> dict:
    """Uploads [(local path, URL)] concurrently with retries; returns files/bytes/seconds."""
    items = [(src, dst, os.path.getsize(src)) for src, dst in pairs]

    def put(item):
        src, dst, nbytes = item
        fs, path = filesystem(dst)
        if is_local(dst):
            fs.makedirs(os.path.dirname(path), exist_ok=True)
        call(f"uploading {os.path.basename(src)} to {redact(dst)}", fs.put_file, src, path)
        return nbytes

    return _run_all(label, items, put, concurrency)


def download(pairs, label="download", sizes=None, concurrency=None) -> dict:
    """Downloads [(URL, local path)] concurrently with retries; returns files/bytes/seconds."""
    items = [(src, dst, (sizes or {}).get(src, 0)) for src, dst in pairs]

    def get(item):
        src, dst, _ = item
        fs, path = filesystem(src)
        os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
        call(f"downloading {redact(src)}", fs.get_file, path, dst)
        return os.path.getsize(dst)

    return _run_all(label, items, get, concurrency)


def local_files(local_dir: str) -> list[str]:
    """Relative paths of every file below `local_dir`, sorted."""
    return sorted(
        os.path.relpath(os.path.join(d, f), local_dir)
        for d, _, files in os.walk(local_dir)
        for f in files
    )
