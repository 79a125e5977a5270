"""Publishing and transfers behave the same on file://, memory:// and S3."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from k2e_core import storage
from k2e_core.storage import publish


def make_savedmodel_like(root, files=12, size=20_000, seed=0):
    """A directory shaped like a SavedModel: variables/, an empty assets/, saved_model.pb."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "variables"))
    os.makedirs(os.path.join(root, "assets"))
    for i in range(files):
        with open(
            os.path.join(root, "variables", f"variables.data-{i:05d}-of-{files:05d}"), "wb"
        ) as f:
            f.write(rng.bytes(size))
    with open(os.path.join(root, "variables", "variables.index"), "wb") as f:
        f.write(rng.bytes(500))
    with open(os.path.join(root, "saved_model.pb"), "wb") as f:
        f.write(rng.bytes(3000))
    return root


def test_publish_makes_a_complete_verified_version(location, tmp_path):
    base, options = location
    src = make_savedmodel_like(str(tmp_path / "sm"))
    with storage.configured(options):
        result = publish.publish(src, base, run_id="run-1", metrics={"loss": 0.5})
        assert result["version"] == 1 and not result["reused"]
        assert publish.versions(base) == [1]
        manifest = publish.read_manifest(storage.join(base, "1"))
        assert manifest["run_id"] == "run-1" and manifest["metrics"] == {"loss": 0.5}
        assert set(manifest["files"]) == set(storage.local_files(src))
        assert manifest["dirs"] == ["assets", "variables"]
        out = str(tmp_path / "downloaded")
        publish.download_version(storage.join(base, "1"), out)
    assert os.path.isdir(os.path.join(out, "assets"))  # empty dirs come back too
    for rel in storage.local_files(src):
        with open(os.path.join(src, rel), "rb") as a, open(os.path.join(out, rel), "rb") as b:
            assert a.read() == b.read()


def test_retried_run_reuses_its_version_and_other_runs_get_new_ones(location, tmp_path):
    base, options = location
    src = make_savedmodel_like(str(tmp_path / "sm"))
    with storage.configured(options):
        first = publish.publish(src, base, run_id="run-1")
        retry = publish.publish(src, base, run_id="run-1")
        other = publish.publish(src, base, run_id="run-2")
        assert (first["version"], retry["version"], retry["reused"]) == (1, 1, True)
        assert other["version"] == 2
        assert publish.versions(base) == [1, 2]


def test_concurrent_runs_never_share_a_version(location, tmp_path):
    base, options = location
    src = make_savedmodel_like(str(tmp_path / "sm"), files=4)
    results, errors = {}, []

    def run(name):
        try:
            with storage.configured(options):
                results[name] = publish.publish(src, base, run_id=name)["version"]
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(f"run-{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    # distinct numbers, each above all published before it; a collision may leave a gap
    assert len(set(results.values())) == 4
    with storage.configured(options):
        for name, version in results.items():
            assert publish.read_manifest(storage.join(base, str(version)))["run_id"] == name


def test_download_detects_a_corrupted_file(location, tmp_path):
    base, options = location
    src = make_savedmodel_like(str(tmp_path / "sm"), files=2)
    with storage.configured(options):
        publish.publish(src, base, run_id="run-1")
        storage.write_bytes(storage.join(base, "1", "variables", "variables.index"), b"tampered")
        with pytest.raises(publish.PublishError, match="does not match the manifest"):
            publish.download_version(storage.join(base, "1"), str(tmp_path / "out"))


def test_missing_location_is_a_clear_permanent_error(location):
    base, options = location
    with storage.configured(options):
        assert storage.glob(storage.join(base, "nothing-here", "*.csv")) == []
        with pytest.raises(FileNotFoundError):
            storage.read_bytes(storage.join(base, "nothing-here"))
