"""Checkpoints in `model_dir`: the one a step resumes from, and a remote `model_dir`.

Every step starts from a checkpoint that reads (`recover`): the one the `checkpoint` state
file names, or, when that file is gone or garbled or names a checkpoint that is missing or
damaged, the newest complete checkpoint that reads, with a warning naming both and the state
file written again. A model_dir whose checkpoints all fail to read is an error, never a
silent start from step 0.

A remote model_dir: TensorFlow trains in a local directory that k2e keeps in sync. On start
only what resuming needs comes down: the `checkpoint` state file and the checkpoint it
continues from (or, before the first one, the Keras warm-start checkpoint). Each checkpoint saved
during training goes up while training goes on (`BackgroundUploads`): what it changed is
frozen when it is saved (checkpoint files hard-linked, so the saver may delete them, other
files copied, the state file's text kept), then uploaded in order, its data and index files
first, event files next, the state file last, naming only checkpoints whose files are all in
the store, and only then are checkpoints the saver removed (keep_checkpoint_max) deleted from
the store. A reader never sees a state file that names missing files, and a killed run
resumes from the last checkpoint that is complete in the store. One upload runs at a time
and at most one more waits: when uploads fall behind, a newer save takes the waiting one's
place (its checkpoint is not uploaded, with a log line; the rest of what it changed goes up
with the newer one), so training never waits for the store.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import logging
import os
import re
import shutil
import threading
from dataclasses import dataclass, field

from k2e_core import storage
from k2e_core.errors import SpecError, first_line
from k2e_core.tf_runtime import tf

log = logging.getLogger("k2e.checkpoints")

STATE = "checkpoint"
_CKPT = re.compile(r"^(?P<prefix>model\.ckpt-(?P<step>\d+))\.(index|meta|data-\d+-of-\d+)$")
_SHARD = re.compile(r"^model\.ckpt-\d+\.data-(\d+)-of-(\d+)$")


def latest_checkpoint_name(state: str) -> str | None:
    """The basename of the checkpoint a `checkpoint` state file's text names."""
    latest = re.search(r'^model_checkpoint_path:\s*"([^"]+)"', state, re.M)
    return os.path.basename(latest.group(1)) if latest else None


def step_of(prefix: str) -> int:
    return int(prefix.rsplit("-", 1)[1])


def complete_checkpoints(names) -> list[str]:
    """Prefixes among file `names` whose index and every data shard are there, newest first."""
    files = {}
    for name in names:
        match = _CKPT.match(name)
        if match:
            files.setdefault(match.group("prefix"), set()).add(name)
    complete = []
    for prefix, present in files.items():
        shards = [_SHARD.match(n) for n in present if _SHARD.match(n)]
        if (
            f"{prefix}.index" in present
            and shards
            and all(
                f"{prefix}.data-{i:05d}-of-{shards[0].group(2)}" in present
                for i in range(int(shards[0].group(2)))
            )
        ):
            complete.append(prefix)
    return sorted(complete, key=step_of, reverse=True)


def unreadable(path_prefix: str) -> str | None:
    """Why the checkpoint at `path_prefix` cannot be restored (every tensor is read, so its
    checksums are checked), or None when it reads."""
    try:
        reader = tf.train.load_checkpoint(path_prefix)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except Exception as err:  # noqa: BLE001 - the reader raises OpError, IndexError, ValueError...
        text = first_line(err, 200)
        if "Checksum does not match" in text:
            return "its data fails its checksum"
        return re.sub(r"^.*?: (?=[A-Z])", "", text, count=1)[:120]
    return None


def recover(
    local_dir: str, names, state: bytes | None, fetch=None, where: str | None = None
) -> str | None:
    """The checkpoint (prefix) to resume from in `local_dir`, after making its `checkpoint`
    state file name it. `names`: the files model_dir holds; `state`: its state file's bytes
    (None: absent); `fetch(prefix)`: brings a checkpoint's files into `local_dir` (a remote
    model_dir). `where`: model_dir as the user wrote it, for messages."""
    where = where or local_dir
    named = latest_checkpoint_name(state.decode("utf-8", "replace")) if state is not None else None
    complete = complete_checkpoints(names)
    if named in complete:
        candidates = [named] + [p for p in complete if step_of(p) < step_of(named)]
    else:
        candidates = complete
    failures = []
    for prefix in candidates:
        if fetch is not None:
            fetch(prefix)
        problem = unreadable(os.path.join(local_dir, prefix))
        if problem is None:
            break
        failures.append((prefix, problem))
    else:
        prefix = None
    if prefix is not None and prefix == named and not failures:
        return prefix
    if prefix is None:
        if failures:
            raise SpecError(
                "model_dir",
                f"no checkpoint in {where} reads "
                f"({', '.join(p for p, _ in failures)}: {failures[0][1]})",
                "restore the files from a copy, or remove model.ckpt-* and the "
                "checkpoint file to train again from the start",
            )
        stray = sorted({_CKPT.match(n).group("prefix") for n in names if _CKPT.match(n)})
        if stray:
            raise SpecError(
                "model_dir",
                f"{where} holds only incomplete checkpoints "
                f"({', '.join(stray)}: index or data files missing)",
                "restore the missing files, or remove model.ckpt-* and the "
                "checkpoint file to train again from the start",
            )
        if state is not None:
            log.warning(
                "%s/checkpoint names %s, but no checkpoint files are there; "
                "starting from the Keras model",
                where,
                named or "nothing readable",
            )
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(local_dir, STATE))
        return None
    if failures:
        why = f"{failures[0][0]} in {where} does not read ({failures[0][1]})" + (
            f", nor {', '.join(p for p, _ in failures[1:])}" if failures[1:] else ""
        )
    elif state is None:
        why = f"{where} has no checkpoint state file"
    elif named is None:
        why = f"{where}/checkpoint is unreadable"
    else:
        why = f"{where}/checkpoint names {named}, which is missing or incomplete"
    log.warning(
        "%s; continuing from %s, the newest checkpoint that reads (state file written again)",
        why,
        prefix,
    )
    failed = {p for p, _ in failures}
    older = sorted(
        (p for p in complete if step_of(p) < step_of(prefix) and p not in failed), key=step_of
    )
    tf.compat.v1.train.update_checkpoint_state(local_dir, prefix, older + [prefix])
    return prefix


def recover_local(model_dir: str, where: str | None = None) -> str | None:
    """`recover` for a model_dir on this machine's file system."""
    path = os.path.join(model_dir, STATE)
    state = None
    if os.path.isfile(path):
        with open(path, "rb") as f:
            state = f.read()
    return recover(model_dir, os.listdir(model_dir), state, where=where)


class RemoteModelDir:
    def __init__(self, url: str, local_dir: str):
        self.url, self.local = url.rstrip("/"), local_dir
        self._sent = {}  # relative path -> (size, mtime) last uploaded, or taken for upload
        self._stored = set()  # checkpoint files in the store (touched by uploads alone)
        self._snapshots = itertools.count()
        os.makedirs(local_dir, exist_ok=True)

    # ------------------------------------------------------------------ down
    def pull_for_resume(self, purpose: str = "resume") -> dict:
        """Downloads the checkpoint to resume from (data and index: its graph is built anew;
        see `recover`) and the Keras warm-start records; the warm-start checkpoint only while
        no training checkpoint exists, as nothing reads it after that. Returns stats."""
        remote = storage.find(self.url)
        state = storage.read_bytes(storage.join(self.url, STATE)) if STATE in remote else None
        top = [rel for rel in remote if "/" not in rel]
        fetched = []

        def fetch(prefix):
            wanted = [
                rel
                for rel in top
                if _CKPT.match(rel)
                and not rel.endswith(".meta")
                and _CKPT.match(rel).group("prefix") == prefix
            ]
            fetched.append(self._download(wanted, remote, purpose))

        if state is not None:
            with open(os.path.join(self.local, STATE), "wb") as f:
                f.write(state)
        prefix = recover(self.local, top, state, fetch, where=storage.redact(self.url))
        keras = [
            rel
            for rel in remote
            if rel.startswith("keras/") and (prefix is None or rel.endswith(".json"))
        ]
        fetched.append(self._download(keras, remote, purpose))
        if state is not None and os.path.exists(os.path.join(self.local, STATE)):
            with open(os.path.join(self.local, STATE), "rb") as f:
                if f.read() == state:  # as the store holds it; else the next push repairs it
                    self._sent[STATE] = self._stamp(STATE)
        stats = {
            "files": sum(f["files"] for f in fetched),
            "bytes": sum(f["bytes"] for f in fetched),
            "seconds": round(sum(f["seconds"] for f in fetched), 3),
            "model_dir_bytes": sum(remote.values()),
        }
        if stats["files"]:
            log.info(
                "%s: fetched %d of %d files (%.1f of %.1f MB) from %s",
                purpose,
                stats["files"],
                len(remote),
                stats["bytes"] / 1e6,
                stats["model_dir_bytes"] / 1e6,
                storage.redact(self.url),
            )
        return stats

    def pull_records(self) -> None:
        """Downloads only model_dir's records (keras/*.json): what the data resolved to."""
        remote = storage.find(self.url)
        wanted = [rel for rel in remote if rel.startswith("keras/") and rel.endswith(".json")]
        self._download(wanted, remote, "read records")

    def _download(self, rels, remote, purpose) -> dict:
        pairs = [(storage.join(self.url, rel), os.path.join(self.local, rel)) for rel in rels]
        stats = storage.download(
            pairs,
            f"{purpose} from {storage.redact(self.url)}",
            sizes={storage.join(self.url, r): remote[r] for r in rels},
        )
        for rel in rels:
            self._sent[rel] = self._stamp(rel)
        self._stored.update(r for r in rels if _CKPT.match(r))
        return stats

    # ------------------------------------------------------------------ up
    def _stamp(self, rel):
        st = os.stat(os.path.join(self.local, rel))
        return st.st_size, st.st_mtime_ns

    def snapshot(self, step: int | None = None) -> Snapshot:
        """What changed locally since the last snapshot, frozen now (see the module doc)."""
        changed = [
            rel
            for rel in storage.local_files(self.local)
            if self._sent.get(rel) != self._stamp(rel)
        ]
        frozen = f"{self.local}.upload-{next(self._snapshots)}"
        snap = Snapshot(
            step=step,
            frozen=frozen,
            checkpoints=sorted(r for r in os.listdir(self.local) if _CKPT.match(r)),
        )
        for rel in changed:
            stamp = self._stamp(rel)
            if os.path.basename(rel) == STATE:
                with open(os.path.join(self.local, rel), "rb") as f:
                    snap.state[rel] = f.read()
            else:
                copy = os.path.join(frozen, rel)
                os.makedirs(os.path.dirname(copy), exist_ok=True)
                if _CKPT.match(os.path.basename(rel)):
                    _link_or_copy(os.path.join(self.local, rel), copy)
                else:
                    shutil.copy2(os.path.join(self.local, rel), copy)
                (snap.ckpt if _CKPT.match(os.path.basename(rel)) else snap.other).append(rel)
            self._sent[rel] = stamp  # taken: the next snapshot leaves it out
        return snap

    def upload(self, snap: Snapshot) -> dict:
        """Uploads a snapshot: its files, then the state file; then
        deletes from the store the checkpoints the saver had removed."""
        stats = {"files": 0, "bytes": 0}
        what = f"checkpoint {snap.step}" if snap.step is not None else "sync"
        try:
            files = snap.ckpt + snap.other
            if files:
                stats = storage.upload(
                    [(os.path.join(snap.frozen, r), storage.join(self.url, r)) for r in files],
                    f"{what} to {storage.redact(self.url)}",
                )
            self._stored.update(r for r in snap.ckpt if "/" not in r)
            for rel, text in snap.state.items():
                if rel == STATE:
                    text = naming_only(text, complete_checkpoints(self._stored))
                    if text is None:
                        continue
                storage.write_bytes(storage.join(self.url, rel), text)
                stats["files"] += 1
            self._prune(snap.checkpoints)
        finally:
            shutil.rmtree(snap.frozen, ignore_errors=True)
        return stats

    def push(self) -> dict:
        """Uploads what changed locally, now (`snapshot`, then `upload`)."""
        return self.upload(self.snapshot())

    def _prune(self, kept):
        """Removes from the store the checkpoints the saver had deleted locally when the
        snapshot was taken (keep_checkpoint_max)."""
        for rel in sorted(self._stored - set(kept)):
            storage.remove(storage.join(self.url, rel))
            self._stored.discard(rel)

    def listener(self, uploads: BackgroundUploads):
        """A CheckpointSaverListener that hands every saved checkpoint to `uploads`."""
        sync = self

        class UploadCheckpoints(tf.estimator.CheckpointSaverListener):
            def after_save(self, session, global_step_value):
                uploads.submit(sync.snapshot(global_step_value), global_step_value)

            def end(self, session, global_step_value):
                uploads.drain()

        return UploadCheckpoints()


def naming_only(state: bytes, prefixes) -> bytes | None:
    """A `checkpoint` state file's text with only the checkpoints among `prefixes` in its
    list (and their timestamps), or None when the one it names is not among them."""
    text = state.decode("utf-8", "replace")
    keep = set(prefixes)
    if latest_checkpoint_name(text) not in keep:
        return None
    paths = re.findall(r'^all_model_checkpoint_paths:\s*"([^"]+)"\s*$', text, re.M)
    stamps = re.findall(r"^all_model_checkpoint_timestamps:\s*(\S+)\s*$", text, re.M)
    if all(os.path.basename(p) in keep for p in paths):
        return state
    kept = [i for i, p in enumerate(paths) if os.path.basename(p) in keep]
    lines = [
        line
        for line in text.splitlines()
        if not line.startswith(("all_model_checkpoint_paths:", "all_model_checkpoint_timestamps:"))
    ]
    lines[1:1] = [f'all_model_checkpoint_paths: "{paths[i]}"' for i in kept]
    if len(stamps) == len(paths):
        lines[1 + len(kept) : 1 + len(kept)] = [
            f"all_model_checkpoint_timestamps: {stamps[i]}" for i in kept
        ]
    return ("\n".join(lines) + "\n").encode()


@dataclass
class Snapshot:
    """A checkpoint's changes, frozen when it was saved, waiting to be uploaded."""

    step: int | None  # the checkpoint's step (None: not a checkpoint's)
    frozen: str  # a directory holding the frozen files
    checkpoints: list  # the checkpoint files local then (the rest were pruned by the saver)
    ckpt: list = field(default_factory=list)
    other: list = field(default_factory=list)
    state: dict = field(default_factory=dict)  # the state file's text then

    def absorb(self, older: Snapshot) -> None:
        """Takes over what an older snapshot, not uploaded, changed and this one did not,
        except its checkpoint files: that checkpoint is not uploaded."""
        for rel in older.other:
            if rel not in self.other:
                moved = os.path.join(self.frozen, rel)
                os.makedirs(os.path.dirname(moved), exist_ok=True)
                os.replace(os.path.join(older.frozen, rel), moved)
                self.other.append(rel)
        for rel, text in older.state.items():
            self.state.setdefault(rel, text)
        shutil.rmtree(older.frozen, ignore_errors=True)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system
        shutil.copy2(src, dst)


class BackgroundUploads:
    """Uploads snapshots one at a time in a thread of its own, one more waiting: a newer
    snapshot takes the waiting one's place (`Snapshot.absorb`), so `submit` never waits.
    A failed upload is raised by the next `submit` or `drain`, and nothing after it is
    uploaded (its state file would name the checkpoint that failed)."""

    def __init__(self, remote: RemoteModelDir):
        self.remote = remote
        self.error: BaseException | None = None
        self.failed = False  # once an upload failed, none after it goes up
        self.uploaded = 0  # checkpoints uploaded
        self.skipped: list[int] = []  # steps whose checkpoint was not uploaded
        self._waiting = None  # (snapshot, step, context)
        self._busy = self._closing = False
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def submit(self, snap: Snapshot, step: int) -> None:
        self._raise()
        # the upload runs in a copy of this context: the storage options configured here
        item = (snap, step, contextvars.copy_context())
        with self._changed:
            if self._thread is None:
                self._closing = False
                self._thread = threading.Thread(target=self._run, name="k2e-uploads", daemon=True)
                self._thread.start()
            if self._waiting is not None:
                older, older_step, _ = self._waiting
                snap.absorb(older)
                self.skipped.append(older_step)
                log.info(
                    "checkpoint %d not uploaded: uploads are behind, checkpoint %d goes up "
                    "in its place",
                    older_step,
                    step,
                )
            self._waiting = item
            self._changed.notify_all()

    @property
    def pending(self) -> int:
        """Uploads running or waiting."""
        with self._changed:
            return int(self._busy) + int(self._waiting is not None)

    def drain(self) -> None:
        """Waits for every upload handed over; raises the first that failed."""
        with self._changed:
            self._changed.wait_for(lambda: self._waiting is None and not self._busy)
        self._raise()

    def close(self) -> None:
        """Ends the thread once what was handed over is up (or has failed)."""
        with self._changed:
            thread, self._thread = self._thread, None
            self._closing = True
            self._changed.notify_all()
        if thread is not None:
            thread.join()

    def _raise(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._waiting is not None or self._closing)
                if self._waiting is None:
                    return
                (snap, step, context), self._waiting = self._waiting, None
                self._busy = True
            try:
                if not self.failed:
                    stats = context.run(self.remote.upload, snap)
                    self.uploaded += 1
                    log.debug("uploaded checkpoint %d (%d files)", step, stats["files"])
                else:
                    shutil.rmtree(snap.frozen, ignore_errors=True)
            except BaseException as err:  # handed to the training thread
                self.error, self.failed = err, True
            finally:
                with self._changed:
                    self._busy = False
                    self._changed.notify_all()
