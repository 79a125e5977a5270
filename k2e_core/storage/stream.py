"""Remote data files read as a stream: training starts once the first files are local, the
next ones download while it runs, and local disk holds at most `keep` of them at a time.

A reader asks for one epoch's files in turn (`epoch`); each comes back as a local path once
downloaded, and the reader calls `release(path)` when it has read the file to its end, which
deletes it. Every epoch downloads the files again. Downloads run in threads of their own,
in the storage settings (`storage.configured`) of the code that made the stream, with the
retries of every other transfer.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import itertools
import os
import random
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor

from k2e_core import storage


class RemoteFiles:
    """Remote files downloaded into `local_dir` as they are read, `keep` on disk at most."""

    def __init__(self, local_dir: str, keep: int):
        self.local_dir = local_dir
        self.keep = max(2, keep)
        self.context = contextvars.copy_context()
        self.lock = threading.Lock()
        #: One per file on local disk, whole or being written: a download waits for one, so
        #: `keep` holds across readers (one stopped early still finishing its downloads).
        self.slots = threading.BoundedSemaphore(self.keep)
        self.on_disk: set[str] = set()
        self.writing = 0
        self.peak_files = 0
        self.downloads = 0
        self.bytes = 0
        self.fetched: list[str] = []  # URLs in the order their downloads ended
        self.numbers = itertools.count()

    def _local_path(self, url: str) -> str:
        """A name of its own for each download: two readers (training, then evaluation of
        the same files) never share one."""
        with self.lock:
            number = next(self.numbers)
        return os.path.join(self.local_dir, f"{number:06d}-{os.path.basename(url)}")

    def epoch(self, urls: list[str], open_at_once=1, shuffled=False, seed=None):
        """Local paths of `urls`, in order or `shuffled` (by `seed`), each once it is
        downloaded. `open_at_once`: files the reader holds open together; the rest of `keep`
        download ahead."""
        order = list(urls)
        if shuffled:
            random.Random(seed).shuffle(order)
        ahead = max(1, self.keep - open_at_once)
        pending: deque = deque()
        queue = iter(order)
        handed: list[str] = []
        pool = ThreadPoolExecutor(min(ahead, 4), thread_name_prefix="k2e-stream")
        try:
            while True:
                while len(pending) < ahead:
                    url = next(queue, None)
                    if url is None:
                        break
                    pending.append(pool.submit(self.context.copy().run, self._download, url))
                if not pending:
                    return
                handed.append(pending.popleft().result())
                yield handed[-1]
        except GeneratorExit:
            # The reader is gone (its iterator destroyed): so is any use of its files.
            for path in handed:
                self.release(path)
            raise
        finally:
            # Downloads still under way are deleted when they end, without waiting here.
            for future in pending:
                future.add_done_callback(self._discard)
            pool.shutdown(wait=False, cancel_futures=True)

    def _discard(self, future) -> None:
        if not future.cancelled() and future.exception() is None:
            self.release(future.result())

    def _download(self, url: str) -> str:
        path = self._local_path(url)
        fs, remote = storage.filesystem(url)
        os.makedirs(self.local_dir, exist_ok=True)
        self.slots.acquire()
        with self.lock:
            self.writing += 1
            self.peak_files = max(self.peak_files, len(self.on_disk) + self.writing)
        try:
            storage.call(f"downloading {storage.redact(url)}", fs.get_file, remote, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
            self.slots.release()
            raise
        finally:
            with self.lock:
                self.writing -= 1
        with self.lock:
            self.on_disk.add(path)
            self.downloads += 1
            self.bytes += os.path.getsize(path)
            self.fetched.append(url)
        return path

    def release(self, path: str) -> None:
        """The reader is done with `path`: it is deleted."""
        with self.lock:
            if path not in self.on_disk:
                return
            self.on_disk.remove(path)
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        self.slots.release()

    def stats(self) -> dict:
        return {"downloads": self.downloads, "bytes": self.bytes, "peak_files": self.peak_files}


def heads(urls: list[str], nbytes: int, window: int = 8):
    """The first `nbytes` of each of `urls`, in order: (bytes, whole file?). `window` are
    fetched concurrently ahead of the one handed out."""
    context = contextvars.copy_context()

    def one(url):
        fs, path = storage.filesystem(url)
        data = storage.call(f"reading {storage.redact(url)}", fs.read_block, path, 0, nbytes + 1)
        return data[:nbytes], len(data) <= nbytes

    pending: deque = deque()
    queue = iter(urls)
    with ThreadPoolExecutor(window, thread_name_prefix="k2e-heads") as pool:
        try:
            while True:
                for url in itertools.islice(queue, window - len(pending)):
                    pending.append(pool.submit(context.copy().run, one, url))
                if not pending:
                    return
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def sha256_of(urls: list[str]) -> str:
    """A digest of the files' contents, read through without a local copy: the same digest
    as `data.fingerprint` of the same files on local disk."""
    digest = hashlib.sha256()
    for url in urls:
        fs, path = storage.filesystem(url)
        one = hashlib.sha256()
        with storage.call(f"reading {storage.redact(url)}", fs.open, path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                one.update(block)
        digest.update(one.hexdigest().encode())
    return digest.hexdigest()
