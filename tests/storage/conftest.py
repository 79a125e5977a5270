"""Storage back ends under test: local files, memory://, and the S3 server of tests/conftest."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import BUCKET


@pytest.fixture(params=["file", "memory", "s3"])
def location(request, tmp_path):
    """(base URL, storage options) on each back end."""
    if request.param == "file":
        return str(tmp_path / "store"), {}
    if request.param == "memory":
        return f"memory://k2e-{uuid.uuid4().hex}", {}
    options = request.getfixturevalue("s3")
    return f"s3://{BUCKET}/{uuid.uuid4().hex}", options
