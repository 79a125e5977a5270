"""Checkpoints uploaded while training goes on, against the S3 server: the state file only
ever names checkpoints that are complete in the store (also when the server stops in the
middle of an upload), at most one upload waits, and the saver's pruning follows the same
path."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
import time

import pytest

from k2e_core import storage
from k2e_core.estimator import checkpoints
from tests.conftest import BUCKET, on_s3
from tests.core.test_cli import K2E

MB = 1 << 20


def _save(local: str, step: int, size: int, payload: bytes | None = None) -> None:
    """A checkpoint as TensorFlow's saver leaves it: data and index, then the state file."""
    with open(os.path.join(local, f"model.ckpt-{step}.data-00000-of-00001"), "wb") as f:
        f.write(payload if payload is not None else os.urandom(size))
    with open(os.path.join(local, f"model.ckpt-{step}.index"), "wb") as f:
        f.write(b"index %d" % step)
    with open(os.path.join(local, "checkpoint"), "w") as f:
        f.write(f'model_checkpoint_path: "model.ckpt-{step}"\n')
        f.write(f'all_model_checkpoint_paths: "model.ckpt-{step}"\n')


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


def test_at_most_one_upload_waits_and_a_save_behind_it_says_so(s3, tmp_path, caplog):
    url = f"s3://{BUCKET}/bounded/model_dir"
    local = str(tmp_path / "model_dir")
    with storage.configured(s3), caplog.at_level(logging.INFO, logger="k2e"):
        remote = checkpoints.RemoteModelDir(url, local)
        uploads = checkpoints.BackgroundUploads(remote)
        taken = []
        payload = os.urandom(96 * MB)  # written in a blink; each upload takes a second or more
        for step in (10, 20, 30):
            _save(local, step, 0, payload)
            began = time.perf_counter()
            uploads.submit(remote.snapshot(), step)
            taken.append(time.perf_counter() - began)
            assert uploads.queue.qsize() <= 1
        uploads.drain()
        uploads.close()
        named, complete = _named_and_complete(url)
    assert taken[0] < 0.5 and taken[1] < 0.5  # one uploading, one waiting: no wait yet
    assert taken[2] > 0.2 and uploads.waited > 0.2  # the third waited for the first
    assert named == "model.ckpt-30" and complete[0] == "model.ckpt-30"
    assert "checkpoint 30 waited" in caplog.text or taken[2] < 0.5


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
