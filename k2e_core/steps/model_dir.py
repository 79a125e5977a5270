"""Where a job's model_dir lives while a step runs, and how it reaches the store.

TensorFlow reads and writes a local directory (`path`). Which one depends on the model_dir
and the step:

- a local model_dir that the step trains in: the directory itself;
- a remote model_dir in a cluster: one local copy that every task of this machine shares,
  which the chief empties and refills from the store;
- any other remote model_dir, or one the step only reads: a mirror in the staging
  directory of what resuming needs (see `checkpoints.RemoteModelDir`), uploaded as
  checkpoints are saved when the step may write.

`inspect` (validate): nothing is created or written anywhere; only model_dir's records
(what the data resolved to) are read.
"""

from __future__ import annotations

import os
import shutil
from typing import Literal

from k2e_core import storage
from k2e_core.distributed import cluster
from k2e_core.storage import checkpoints

Access = Literal["train", "read", "inspect"]


class ModelDir:
    def __init__(self, url: str, path: str, remote=None, resume=None, writable=True):
        self.url = url
        self.path = path
        self.remote = remote  # checkpoints.RemoteModelDir keeping `path` in sync with `url`
        self.resume = resume  # what was fetched to resume from (stats), for remote model_dirs
        self.writable = writable
        self.uploads = checkpoints.BackgroundUploads(remote) if remote and writable else None

    @classmethod
    def open(
        cls, url: str, staging_dir: str, access: Access, task: cluster.Task | None = None
    ) -> ModelDir:
        """`access`: train (resume and write), read (the latest checkpoint, never written
        back), inspect (records only, nothing created)."""
        leads = cluster.leads(task)
        where = storage.redact(url)
        if access == "inspect":
            return cls._inspect(url, staging_dir)
        if storage.is_local(url) and access == "train":
            path = storage.local_path(url)
            os.makedirs(path, exist_ok=True)
            if leads:
                checkpoints.recover_local(path, where=where)
            return cls(url, path)
        if task is not None:
            path = cluster.shared_dir(url)
            remote = resume = None
            if leads:  # a fresh copy: nothing a killed earlier run left behind gets uploaded
                shutil.rmtree(path, ignore_errors=True)
                remote = checkpoints.RemoteModelDir(url, path)
                resume = remote.pull_for_resume("resume")
            os.makedirs(path, exist_ok=True)
            return cls(url, path, remote, resume)
        path = os.path.join(staging_dir, "model_dir")
        remote = checkpoints.RemoteModelDir(url, path)
        resume = remote.pull_for_resume(access)
        return cls(url, path, remote, resume, writable=access == "train")

    @classmethod
    def _inspect(cls, url: str, staging_dir: str) -> ModelDir:
        if storage.is_local(url):
            return cls(url, storage.local_path(url), writable=False)
        path = os.path.join(staging_dir, "model_dir")
        checkpoints.RemoteModelDir(url, path).pull_records()
        return cls(url, path, writable=False)

    def sync(self) -> None:
        """Uploads what changed in a remote model_dir's local copy, once the checkpoints
        being uploaded in the background are up."""
        if self.uploads is not None:
            self.uploads.drain()
            self.remote.push()

    def saved(self, step: int) -> None:
        """A checkpoint was saved at `step` (a trainer without saver listeners says so):
        a remote model_dir uploads it in the background."""
        if self.uploads is not None:
            self.uploads.submit(self.remote.snapshot(step), step)

    def listeners(self) -> list:
        """Checkpoint-saver listeners that upload each checkpoint in the background as it is
        saved (`checkpoints.BackgroundUploads`)."""
        return [self.remote.listener(self.uploads)] if self.uploads is not None else []

    def close(self) -> None:
        """Waits for the background uploads and ends their thread."""
        if self.uploads is not None:
            self.uploads.close()

    def checkpoint_url(self, checkpoint: str) -> str:
        """Where a checkpoint of `path` lives in the store (itself for a local model_dir)."""
        if self.remote is None:
            return checkpoint
        return storage.join(self.url, os.path.basename(checkpoint))
