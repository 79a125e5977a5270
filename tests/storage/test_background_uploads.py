"""Checkpoints uploaded while training goes on, against the S3 server: the state file only
ever names checkpoints that are complete in the store (also when the server stops in the
middle of an upload), at most one upload waits and a newer save takes its place, a run
killed during an upload resumes from what is complete in the store, and the saver's pruning
follows the same path."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import threading
import time

import pytest

from k2e_core import storage
from k2e_core.storage import checkpoints
from tests.conftest import BUCKET, on_s3
from tests.core.test_cli import K2E

MB = 1 << 20


def _save(local: str, step: int, size: int, payload: bytes | None = None) -> None:
    """A checkpoint as TensorFlow's saver leaves it: data and index, then the state file
    naming it and the checkpoints before it that are still there."""
    with open(os.path.join(local, f"model.ckpt-{step}.data-00000-of-00001"), "wb") as f:
        f.write(payload if payload is not None else os.urandom(size))
    with open(os.path.join(local, f"model.ckpt-{step}.index"), "wb") as f:
        f.write(b"index %d" % step)
    kept = checkpoints.complete_checkpoints(os.listdir(local))[::-1]
    with open(os.path.join(local, "checkpoint"), "w") as f:
        f.write(f'model_checkpoint_path: "model.ckpt-{step}"\n')
        f.write("".join(f'all_model_checkpoint_paths: "{p}"\n' for p in kept))


def _named_and_complete(url: str) -> tuple[str | None, list]:
    """(the checkpoint the store's state file names, the complete checkpoints in the store)."""
    files = storage.find(url)
    named = None
    if "checkpoint" in files:
        named = checkpoints.latest_checkpoint_name(
            storage.read_bytes(storage.join(url, "checkpoint")).decode()
        )
    return named, checkpoints.complete_checkpoints(files)


def test_a_server_stopping_mid_upload_leaves_a_state_file_naming_a_complete_checkpoint(
    s3, s3_server, tmp_path
):
    url = f"s3://{BUCKET}/stopped/model_dir"
    local = str(tmp_path / "model_dir")
    with storage.configured(s3, retries=1, retry_seconds=5):
        remote = checkpoints.RemoteModelDir(url, local)
        uploads = checkpoints.BackgroundUploads(remote)
        _save(local, 10, 1 * MB)
        uploads.submit(remote.snapshot(), 10)
        uploads.drain()
        assert _named_and_complete(url) == ("model.ckpt-10", ["model.ckpt-10"])

        _save(local, 20, 64 * MB)
        uploads.submit(remote.snapshot(), 20)
        time.sleep(0.05)  # the 64 MB upload has begun
        s3_server.stop()
        with pytest.raises(storage.StorageError):
            uploads.drain()
        s3_server.start()  # the same in-process store: what was up before the stop
        named, complete = _named_and_complete(url)
        assert named == "model.ckpt-10" and named in complete

        # nothing after a failed upload goes up: its state file would name a missing one
        _save(local, 30, 1 * MB)
        uploads.submit(remote.snapshot(), 30)
        uploads.close()
        assert _named_and_complete(url)[0] == "model.ckpt-10"
    assert not [p for p in os.listdir(tmp_path) if ".upload-" in p]  # frozen copies removed


def test_a_save_behind_a_waiting_upload_takes_its_place(s3, tmp_path, caplog, tf):
    """One checkpoint uploading, one waiting: a third save replaces the waiting one, without
    waiting. The replaced checkpoint never goes up, the store's state file names only what
    is there (and TensorFlow reads it), and the other files the replaced save changed (an
    event file) go up with the newer one."""
    url = f"s3://{BUCKET}/behind/model_dir"
    local = str(tmp_path / "model_dir")
    with storage.configured(s3), caplog.at_level(logging.INFO, logger="k2e"):
        remote = checkpoints.RemoteModelDir(url, local)
        first_upload_may_finish = threading.Event()
        real_upload = remote.upload

        def upload(snap):
            first_upload_may_finish.wait(60)  # keeps step 10 uploading while 20 and 30 come
            return real_upload(snap)

        remote.upload = upload
        uploads = checkpoints.BackgroundUploads(remote)
        taken, pending, frozen = [], [], []
        for step in (10, 20, 30):
            _save(local, step, 2 * MB)
            if step == 20:
                (tmp_path / "model_dir" / "events.out.tfevents.20").write_bytes(b"curves")
            began = time.perf_counter()
            uploads.submit(remote.snapshot(), step)
            taken.append(time.perf_counter() - began)
            pending.append(uploads.pending)
            frozen.append(len([p for p in os.listdir(tmp_path) if ".upload-" in p]))
        first_upload_may_finish.set()
        uploads.drain()
        uploads.close()
        named, complete = _named_and_complete(url)
        names = storage.find(url)
        state = storage.read_bytes(storage.join(url, "checkpoint"))
    assert max(taken) < 0.5  # no save waited
    assert pending == [1, 2, 2] and frozen == [1, 2, 2]  # bounded: one uploading, one waiting
    assert uploads.skipped == [20]
    assert "checkpoint 20 not uploaded: uploads are behind, checkpoint 30 goes up" in caplog.text
    assert named == "model.ckpt-30" and complete == ["model.ckpt-30", "model.ckpt-10"]
    assert not [n for n in names if n.startswith("model.ckpt-20")]
    assert names["events.out.tfevents.20"] == len(b"curves")
    assert b"model.ckpt-20" not in state
    restored = tmp_path / "restored"
    restored.mkdir()
    (restored / "checkpoint").write_bytes(state)
    read = tf.train.get_checkpoint_state(str(restored))
    assert [os.path.basename(p) for p in read.all_model_checkpoint_paths] == [
        "model.ckpt-10",
        "model.ckpt-30",
    ]
    assert not [p for p in os.listdir(tmp_path) if ".upload-" in p]  # frozen copies removed


@pytest.mark.slow
def test_training_keeps_one_checkpoint_in_the_store_while_uploads_run_behind(
    s3, iris_spec, tmp_path
):
    """keep_checkpoint_max 1 and a checkpoint every 25 steps: the saver deletes each
    checkpoint's files as the next is saved, often while they are still going up; the store
    ends with the last checkpoint alone, named by its state file, and a rerun resumes there."""
    spec = on_s3(
        dict(
            iris_spec,
            train={"steps": 400},
            run_config={
                "tf_random_seed": 1,
                "save_checkpoints_steps": 25,
                "keep_checkpoint_max": 1,
                "log_every_secs": 60,
            },
        ),
        s3,
    )
    path = tmp_path / "job.json"
    path.write_text(json.dumps(spec))
    proc = subprocess.run([K2E, "train", str(path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with storage.configured(s3):
        named, complete = _named_and_complete(spec["model_dir"])
        names = storage.find(spec["model_dir"])
    assert named == "model.ckpt-400" and complete == ["model.ckpt-400"]
    assert not [n for n in names if n.startswith("model.ckpt-") and "-400." not in n]
    again = subprocess.run(
        [K2E, "train", str(path), "--set", "train.steps=450"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0 and "training from step 400 " in again.stderr


def test_uploads_run_while_training_goes_on(s3, tmp_path):
    """The saver's listener hands a snapshot over and returns: training does not wait for a
    64 MB upload."""
    url = f"s3://{BUCKET}/overlap/model_dir"
    local = str(tmp_path / "model_dir")
    with storage.configured(s3):
        remote = checkpoints.RemoteModelDir(url, local)
        uploads = checkpoints.BackgroundUploads(remote)
        _save(local, 10, 64 * MB)
        began = time.perf_counter()
        uploads.submit(remote.snapshot(), 10)
        handed_over = time.perf_counter() - began
        alive = [t.name for t in threading.enumerate()]
        began = time.perf_counter()
        uploads.drain()
        uploaded = time.perf_counter() - began
        uploads.close()
    assert "k2e-uploads" in alive
    assert handed_over < uploaded


BIG_MODEL = """
import tensorflow as tf


def build():
    tf.keras.utils.set_random_seed(1)
    model = tf.keras.Sequential([
        tf.keras.Input(shape=(64,), name="x"),
        tf.keras.layers.Dense(3072, activation="relu"),
        tf.keras.layers.Dense(3072, activation="relu"),
        tf.keras.layers.Dense(1, name="y"),
    ])
    model.compile(optimizer="adam", loss="mse")
    return model
"""


class BigCheckpoints:
    """`k2e train` of a model whose checkpoints are 115 MB (multipart uploads of 50 MiB
    parts), saved every second, so an upload is always running, with model_dir on the S3
    server."""

    def __init__(self, s3, tmp_path):
        import boto3
        import numpy as np

        (tmp_path / "big_model.py").write_text(BIG_MODEL)
        rng = np.random.default_rng(1)
        np.savez(
            tmp_path / "big.npz",
            x=rng.normal(size=(256, 64)).astype(np.float32),
            y=rng.normal(size=(256, 1)).astype(np.float32),
        )
        self.s3 = s3
        self.spec = on_s3(
            {
                "model": {"factory": f"{tmp_path}/big_model.py:build"},
                "data": {"train": {"files": str(tmp_path / "big.npz")}, "batch_size": 32},
                "eval": {"every_steps": "end"},
                "train": {"steps": 100_000},
                "run_config": {"save_checkpoints_secs": 1, "keep_checkpoint_max": 2},
            },
            s3,
        )
        self.path = tmp_path / "job.json"
        self.path.write_text(json.dumps(self.spec))
        self.prefix = self.spec["model_dir"].split(f"s3://{BUCKET}/", 1)[1]
        self.client = boto3.client(
            "s3",
            endpoint_url=s3["s3"]["endpoint_url"],
            aws_access_key_id=s3["s3"]["key"],
            aws_secret_access_key=s3["s3"]["secret"],
        )

    def in_flight(self) -> list:
        """The files whose multipart upload has begun and not completed."""
        listed = self.client.list_multipart_uploads(Bucket=BUCKET, Prefix=self.prefix)
        return [os.path.basename(u["Key"]) for u in listed.get("Uploads", [])]

    def stored(self) -> tuple[str | None, list]:
        with storage.configured(self.s3):
            return _named_and_complete(self.spec["model_dir"])

    def train_until_uploading(self, stop) -> str:
        """Starts training and calls `stop(proc)` once a checkpoint after the first is in
        the store and a multipart upload is going on; returns stderr."""
        proc = subprocess.Popen([K2E, "train", str(self.path)], stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 240
        try:
            while time.time() < deadline and proc.poll() is None:
                if self.in_flight() and self.stored()[0] not in (None, "model.ckpt-0"):
                    break
                time.sleep(0.05)
        finally:
            stop(proc)
            stderr = proc.communicate(timeout=120)[1]
        self.returncode = proc.returncode
        return stderr


@pytest.mark.slow
def test_a_run_killed_during_a_background_upload_resumes_from_the_last_complete_checkpoint(
    s3, tmp_path
):
    """SIGKILL while a part is going up leaves the store's state file naming a complete
    checkpoint, and a rerun resumes at its step."""
    job = BigCheckpoints(s3, tmp_path)
    stderr = job.train_until_uploading(lambda proc: proc.kill())
    uploading = job.in_flight()
    named, complete = job.stored()
    assert uploading, stderr[-3000:]  # killed in the middle of a multipart upload
    assert named in complete
    resumed_from = checkpoints.step_of(named)
    unfinished = {checkpoints.step_of(name.split(".data")[0]) for name in uploading}
    assert resumed_from not in unfinished

    again = subprocess.run(
        [K2E, "train", str(job.path), "--set", f"train.steps={resumed_from + 20}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"training from step {resumed_from} " in again.stderr
    assert json.loads(again.stdout.strip().splitlines()[-1])["global_step"] == resumed_from + 20


@pytest.mark.slow
def test_sigterm_during_a_background_upload_waits_for_it_and_uploads_the_last_step(s3, tmp_path):
    """An orchestrator's SIGTERM while a checkpoint is going up: training stops after the
    current step, saves it, and exits 1 only once that checkpoint is in the store, named by
    its state file, with no upload left half done."""
    job = BigCheckpoints(s3, tmp_path)
    stderr = job.train_until_uploading(lambda proc: proc.send_signal(signal.SIGTERM))
    assert job.returncode == 1, stderr[-3000:]
    stopped = re.search(r"training stopped on request at step (\d+)", stderr)
    assert stopped, stderr[-3000:]
    named, complete = job.stored()
    assert named == f"model.ckpt-{stopped.group(1)}" and named in complete
    assert job.in_flight() == []
    assert "rerun resumes from it" in stderr and "/tmp/" not in stderr.splitlines()[-1]
