"""Failures in the middle of things: nothing half-published, and reruns that finish the job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest
import yaml

from k2e_core import storage
from k2e_core.storage import publish
from tests.conftest import BUCKET, free_port
from tests.storage.test_publish import make_savedmodel_like

K2E = os.path.join(os.path.dirname(sys.executable), "k2e")


def _loadable_versions(base):
    """Numbered directories a server could load: those holding saved_model.pb."""
    return [
        n
        for n in storage.listdir(base)
        if n.isdigit() and storage.exists(storage.join(base, n, "saved_model.pb"))
    ]


def test_server_stopped_mid_publish_then_rerun_publishes_exactly_one_version(
    s3, s3_server, tmp_path
):
    base = f"s3://{BUCKET}/faults/model"
    src = make_savedmodel_like(str(tmp_path / "sm"), files=40, size=50_000)
    stopped = threading.Event()
    real_upload = storage.upload

    def upload_then_crash(pairs, label="upload", concurrency=None):
        pairs = list(pairs)
        real_upload(pairs[:5], label, concurrency)  # some files made it
        s3_server.stop()
        stopped.set()
        return real_upload(pairs[5:], label, concurrency)

    with storage.configured(s3, retries=2):
        storage.upload, saved = upload_then_crash, storage.upload
        try:
            began = time.perf_counter()
            with pytest.raises(publish.PublishError, match="nothing new is visible, rerun"):
                publish.publish(src, base, run_id="nightly-1")
            assert time.perf_counter() - began < 60
        finally:
            storage.upload = saved
        assert stopped.is_set()
        s3_server.start()  # the server comes back with what it had
        assert publish.versions(base) == []
        assert _loadable_versions(base) == []
        result = publish.publish(src, base, run_id="nightly-1")
        assert result["version"] == 1
        assert publish.versions(base) == [1] and _loadable_versions(base) == ["1"]
        publish.download_version(storage.join(base, "1"), str(tmp_path / "check"))


def test_transient_errors_are_retried_and_permanent_ones_are_not(tmp_path, caplog):
    import fsspec

    memory = fsspec.filesystem("memory")
    real_put = memory.put_file
    failures = {"left": 2}

    def flaky_put(lpath, rpath, **kwargs):
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionResetError("connection reset by peer")
        return real_put(lpath, rpath, **kwargs)

    src = tmp_path / "f.bin"
    src.write_bytes(b"x" * 1000)
    memory.put_file = flaky_put
    try:
        with storage.configured({}, retries=3):
            storage.upload([(str(src), "memory://k2e-retry/f.bin")])
    finally:
        del memory.put_file
    assert storage.size("memory://k2e-retry/f.bin") == 1000
    assert sum("retry" in r.message for r in caplog.records) == 2

    began = time.perf_counter()
    with storage.configured({}, retries=5):
        with pytest.raises(FileNotFoundError):
            storage.read_bytes("memory://k2e-retry/missing.bin")
    assert time.perf_counter() - began < 1.0


@pytest.mark.parametrize("port", [40365, 14040, 9000])
def test_a_refused_connection_is_retried_whatever_the_port(port):
    """A status code is read as a number of its own: the port 40365 in an endpoint's URL
    once made a refused connection permanent (no retry) in one test run in ten."""
    from botocore.exceptions import ClientError, EndpointConnectionError

    refused = EndpointConnectionError(endpoint_url=f"http://127.0.0.1:{port}/bucket/x")
    assert storage.is_transient(refused)
    denied = ClientError({"Error": {"Code": "403", "Message": "Forbidden"}}, "GetObject")
    missing = ClientError({"Error": {"Code": "NoSuchBucket", "Message": "-"}}, "GetObject")
    assert not storage.is_transient(denied) and not storage.is_transient(missing)


def test_retrying_an_unreachable_store_is_bounded_and_says_how_long():
    """A refused connection used to take 17.6 s with storage.retries: 2 (the S3 client and
    s3fs retried inside each attempt); storage.retry_seconds bounds the total."""
    refused = {"s3": {"endpoint_url": f"http://127.0.0.1:{free_port()}", "key": "k", "secret": "s"}}
    began = time.perf_counter()
    with storage.configured(refused, retries=2):
        with pytest.raises(
            storage.StorageError,
            match=r"gave up after 2 attempts in \d+\.\ds "
            r"\(storage.retries, storage.retry_seconds\)",
        ):
            storage.read_bytes("s3://bucket/x")
    assert time.perf_counter() - began < 10  # was 17.6 s
    began = time.perf_counter()
    with storage.configured(refused, retries=1000, retry_seconds=3):
        # one slow first attempt can spend the 3 s alone; the message still says so
        with pytest.raises(storage.StorageError, match=r"gave up after \d+ attempts? in"):
            storage.read_bytes("s3://bucket/x")
    assert time.perf_counter() - began < 10
    with storage.configured(refused, retries=1000, retry_seconds=0.01):
        with pytest.raises(storage.StorageError, match=r"gave up after 1 attempt in \d"):
            storage.read_bytes("s3://bucket/x")


def test_missing_bucket_fails_at_once_and_says_so(s3):
    began = time.perf_counter()
    with storage.configured(s3, retries=5):
        with pytest.raises(FileNotFoundError):
            storage.read_bytes("s3://no-such-bucket-k2e/x")
    assert time.perf_counter() - began < 5


def _s3_job(tmp_path, s3, iris_spec, steps, prefix):
    spec = dict(
        iris_spec,
        model_dir=f"s3://{BUCKET}/{prefix}/model_dir",
        train={"steps": steps},
        run_config={"save_checkpoints_steps": 100, "keep_checkpoint_max": 3, "log_every_secs": 1},
        export={"base": f"s3://{BUCKET}/{prefix}/serving"},
        storage={"options": s3, "retries": 3},
    )
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


@pytest.mark.slow
def test_training_killed_after_a_checkpoint_resumes_from_it(s3, iris_spec, tmp_path):
    spec = _s3_job(tmp_path, s3, iris_spec, steps=20000, prefix="killed")
    proc = subprocess.Popen(
        [K2E, "train", spec], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    state = f"s3://{BUCKET}/killed/model_dir/checkpoint"
    deadline = time.time() + 120

    def uploaded():  # a checkpoint after training began (model.ckpt-0 is the initial one)
        if not storage.exists(state):
            return False
        return 'model_checkpoint_path: "model.ckpt-0"' not in storage.read_bytes(state).decode()

    with storage.configured(s3):
        while time.time() < deadline and not uploaded():
            time.sleep(0.2)
        proc.kill()
        proc.wait(30)
        text = storage.read_bytes(state).decode()
    uploaded_step = int(text.split('model_checkpoint_path: "model.ckpt-')[1].split('"')[0])
    assert 0 < uploaded_step < 20000

    rerun = subprocess.run(
        [K2E, "train", spec, "--set", f"train.steps={uploaded_step + 200}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rerun.returncode == 0, rerun.stderr
    result = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert f"training from step {uploaded_step} " in rerun.stderr
    assert result["global_step"] == uploaded_step + 200
    assert result["steps_trained"] == 200
    assert (
        result["checkpoint"] == f"s3://{BUCKET}/killed/model_dir/model.ckpt-{uploaded_step + 200}"
    )
    # Resuming fetched that checkpoint's variables and a few small records; not the graph
    # (.meta), the event files, older checkpoints or the Keras warm-start checkpoint.
    with storage.configured(s3):
        files = storage.find(f"s3://{BUCKET}/killed/model_dir")
    resumed = sum(
        size
        for name, size in files.items()
        if name.startswith(f"model.ckpt-{uploaded_step}.") and not name.endswith(".meta")
    )
    assert resumed <= result["resume_download_bytes"] <= resumed + 1024, (resumed, files)


def test_end_to_end_on_s3_and_the_published_version_loads(s3, iris_spec, tmp_path, tf):
    spec = _s3_job(tmp_path, s3, iris_spec, steps=150, prefix="e2e")
    proc = subprocess.run([K2E, "run", spec], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["export_path"] == f"s3://{BUCKET}/e2e/serving/1"
    assert result["model_dir"] == f"s3://{BUCKET}/e2e/model_dir"
    assert "k2e-test-secret" not in proc.stdout + proc.stderr  # credentials stay out of output

    with storage.configured(s3):
        local = str(tmp_path / "served")
        publish.download_version(result["export_path"], local)
        remote = storage.find(result["model_dir"])
    assert "checkpoint" in remote and "model.ckpt-150.index" in remote
    assert any(name.startswith("events.out.tfevents") for name in remote)
    served = tf.saved_model.load(local).signatures["serving_default"]
    out = served(dense_input=tf.constant([[5.0, 3.4, 1.5, 0.2]]))
    assert list(out.values())[0].shape == (1, 3)
