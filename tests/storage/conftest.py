"""Storage back ends under test: local files, memory://, and a real S3-protocol server.

The S3 endpoint is moto's standalone server, started here on 127.0.0.1 and stopped at the
end (s3fs's own test suite does the same); it is reset between tests.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid

import pytest
import requests

BUCKET = "k2e-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    def __init__(self):
        from moto.server import ThreadedMotoServer

        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.running = False

    def start(self):
        self._server.start()
        self.running = True

    def stop(self):
        if self.running:
            self._server.stop()
            self.running = False

    def reset(self):
        requests.post(f"{self.endpoint}/moto-api/reset", timeout=10)


@pytest.fixture(scope="session")
def s3_server():
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    env = {"AWS_ACCESS_KEY_ID": "k2e-test-key", "AWS_SECRET_ACCESS_KEY": "k2e-test-secret",
           "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    server = S3Server()
    server.start()
    yield server
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def s3(s3_server):
    """A fresh bucket on the running server, and the storage options that reach it."""
    if not s3_server.running:
        s3_server.start()
    s3_server.reset()
    import s3fs

    # botocore and s3fs retry too; bounded here so that a stopped server fails fast in tests
    options = {"s3": {"endpoint_url": s3_server.endpoint, "key": "k2e-test-key",
                      "secret": "k2e-test-secret",
                      "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2}}}
    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem(**options["s3"])
    fs.mkdir(BUCKET)
    return options


@pytest.fixture(params=["file", "memory", "s3"])
def location(request, tmp_path):
    """(base URL, storage options) on each back end."""
    if request.param == "file":
        return str(tmp_path / "store"), {}
    if request.param == "memory":
        return f"memory://k2e-{uuid.uuid4().hex}", {}
    options = request.getfixturevalue("s3")
    return f"s3://{BUCKET}/{uuid.uuid4().hex}", options
