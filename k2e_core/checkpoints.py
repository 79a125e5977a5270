"""A remote `model_dir`: TensorFlow trains in a local directory that k2e keeps in sync.

On start only what resuming needs comes down: the `checkpoint` state file and the checkpoint
it names (or, before the first one, the Keras warm-start checkpoint). Each checkpoint saved
during training goes up at once (a saver listener): its data and index files first, event
files next, the state file last, so a reader never sees a state file that names missing
files.
"""

from __future__ import annotations

import logging
import os
import re

from k2e_core import storage
from k2e_core._tensorflow import tf

log = logging.getLogger("k2e.checkpoints")

STATE = "checkpoint"
_CKPT = re.compile(r"^(?P<prefix>model\.ckpt-\d+)\.(index|meta|data-\d+-of-\d+)$")


def latest_checkpoint_name(state: str) -> str | None:
    """The basename of the checkpoint a `checkpoint` state file's text names."""
    latest = re.search(r'^model_checkpoint_path:\s*"([^"]+)"', state, re.M)
    return os.path.basename(latest.group(1)) if latest else None


class RemoteModelDir:
    def __init__(self, url: str, local_dir: str):
        self.url, self.local = url.rstrip("/"), local_dir
        self._sent = {}  # relative path -> (size, mtime) last uploaded
        os.makedirs(local_dir, exist_ok=True)

    # ------------------------------------------------------------------ down
    def pull_for_resume(self, purpose: str = "resume") -> dict:
        """Downloads the latest checkpoint (data and index: its graph is built anew) and
        the Keras warm-start records; the warm-start checkpoint only while no training
        checkpoint exists, as nothing reads it after that. Returns stats."""
        remote = storage.find(self.url)
        prefix = None
        if STATE in remote:
            prefix = latest_checkpoint_name(
                storage.read_bytes(storage.join(self.url, STATE)).decode())
        wanted = [rel for rel in remote if rel.startswith("keras/")
                  and (prefix is None or rel.endswith(".json"))]
        if prefix:
            wanted += [rel for rel in remote
                       if "/" not in rel and _CKPT.match(rel) and
                       _CKPT.match(rel).group("prefix") == prefix and not rel.endswith(".meta")]
            wanted.append(STATE)
        pairs = [(storage.join(self.url, rel), os.path.join(self.local, rel)) for rel in wanted]
        stats = storage.download(pairs, f"{purpose} from {storage.redact(self.url)}",
                                 sizes={storage.join(self.url, r): remote[r] for r in wanted})
        for rel in wanted:
            self._sent[rel] = self._stamp(rel)
        stats["model_dir_bytes"] = sum(remote.values())
        if wanted:
            log.info("%s: fetched %d of %d files (%.1f of %.1f MB) from %s", purpose, stats["files"],
                     len(remote), stats["bytes"] / 1e6, stats["model_dir_bytes"] / 1e6,
                     storage.redact(self.url))
        return stats

    # ------------------------------------------------------------------ up
    def _stamp(self, rel):
        st = os.stat(os.path.join(self.local, rel))
        return st.st_size, st.st_mtime_ns

    def push(self) -> dict:
        """Uploads what changed locally: checkpoints first, then the rest, the state file last."""
        changed = [rel for rel in storage.local_files(self.local)
                   if self._sent.get(rel) != self._stamp(rel)]
        ckpt = [r for r in changed if _CKPT.match(os.path.basename(r))]
        other = [r for r in changed if r not in ckpt and os.path.basename(r) != STATE]
        state = [r for r in changed if os.path.basename(r) == STATE]
        stats = {"files": 0, "bytes": 0}
        for group in (ckpt, other, state):  # in this order: the state file names files already up
            if not group:
                continue
            stamps = {rel: self._stamp(rel) for rel in group}
            done = storage.upload([(os.path.join(self.local, r), storage.join(self.url, r))
                                   for r in group], f"sync to {storage.redact(self.url)}")
            self._sent.update(stamps)
            stats["files"] += done["files"]
            stats["bytes"] += done["bytes"]
        self._prune()
        return stats

    def _prune(self):
        """Removes remote checkpoints that the saver deleted locally (keep_checkpoint_max)."""
        local = {r for r in os.listdir(self.local) if _CKPT.match(r)}
        stale = [r for r in self._sent if "/" not in r and _CKPT.match(r) and r not in local]
        for rel in stale:
            storage.remove(storage.join(self.url, rel))
            self._sent.pop(rel, None)

    def listener(self):
        """A CheckpointSaverListener that uploads every checkpoint right after it is saved."""
        sync = self

        class UploadCheckpoints(tf.estimator.CheckpointSaverListener):
            def after_save(self, session, global_step_value):
                stats = sync.push()
                log.debug("uploaded checkpoint %d (%d files)", global_step_value, stats["files"])

        return UploadCheckpoints()
