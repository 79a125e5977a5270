"""Remote data is streamed: training starts on the first shards, local disk holds a few at a
time, every epoch reads them again, a cluster worker fetches its own share only, and bad
rows in a remote shard are named by URL and line. Real data (penguins, digits) in shards
as pandas and TFRecordWriter write them, on the S3 server of tests/conftest."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest

from tests import real_data
from tests.conftest import BUCKET
from tests.real_data import PENGUIN_MEASUREMENTS, factory


def _upload(s3, local_dir, prefix) -> str:
    import s3fs

    fs = s3fs.S3FileSystem(**s3["s3"])
    fs.put(str(local_dir) + "/", f"{BUCKET}/{prefix}/", recursive=True)
    return f"s3://{BUCKET}/{prefix}"


def _penguin_shards(tmp_path, shards: int, gzipped=()):
    """The penguins (rows with every measurement) as `shards` CSV files, pandas' to_csv."""
    frame = real_data.penguins().dropna(subset=PENGUIN_MEASUREMENTS)
    out = tmp_path / "shards"
    out.mkdir()
    for i, rows in enumerate(np.array_split(np.arange(len(frame)), shards)):
        part = frame.iloc[rows]
        name = f"part-{i:02d}.csv" + (".gz" if i in gzipped else "")
        part.to_csv(out / name, index=False, compression="gzip" if i in gzipped else None)
    return frame, out


def _penguin_job(files, tmp_path, **data):
    return {
        "model": {"factory": factory("penguin_model")},
        "model_dir": str(tmp_path / "model"),
        "data": {
            "train": {"files": files},
            "features": {"measurements": PENGUIN_MEASUREMENTS},
            "labels": "species",
            **data,
        },
        "train": {"steps": 60},
        "run_config": {"tf_random_seed": 1, "log_every_secs": 60},
    }


@pytest.mark.slow
def test_remote_shards_train_as_the_same_files_on_local_disk_would(s3, tmp_path, caplog):
    """Eight shards (one gzipped) on S3, without shuffling: the model of the same files on
    local disk (up to the order of the batches the parallel parse hands over); 3 files on
    disk at most; each epoch downloads all 8 again."""
    from k2e_core.steps import job

    frame, local = _penguin_shards(tmp_path, 8, gzipped={3})
    remote = _upload(s3, local, "penguins")
    data = {"batch_size": 16, "shuffle_buffer": 0, "parallel_reads": 2, "local_files": 3}
    disk_spec = _penguin_job(str(local / "*"), tmp_path / "disk", **data)
    s3_spec = {**_penguin_job(f"{remote}/*", tmp_path / "s3", **data), "storage": {"options": s3}}
    on_disk, streamed = job.train_step(disk_spec), job.train_step(s3_spec)
    assert job.evaluate_step(s3_spec)["metrics"] == pytest.approx(
        job.evaluate_step(disk_spec)["metrics"], rel=0.02
    )
    epochs = -(-60 * 16 // len(frame))  # steps x batch over the rows, rounded up
    # every epoch fetches the 8 again; read-ahead may start the next
    assert 8 * epochs <= streamed["streamed"]["downloads"] <= 8 * (epochs + 1)
    assert streamed["streamed"]["peak_files"] <= 3
    assert "streamed" not in on_disk


def test_a_cluster_worker_downloads_only_its_own_share(s3, tmp_path):
    from k2e_core.inputs import pipeline
    from k2e_core.steps import job

    _, local = _penguin_shards(tmp_path, 8)
    remote = _upload(s3, local, "share")
    spec = {**_penguin_job(f"{remote}/*", tmp_path), "storage": {"options": s3}}
    seen = {}
    with job.open_job(spec) as j:
        j.check_data()  # the checks before training read the first rows
        source = j.data.source("train")
        for index in range(4):
            before = len(source.stream.fetched)
            fn = pipeline.input_fn(
                j.data.plan, source, j.spec.data, training=False, shard=(index, 4)
            )
            rows = sum(int(labels.shape[0]) for _, labels in fn())
            seen[index] = (source.stream.fetched[before:], rows)
    shares = [set(files) for files, _ in seen.values()]
    assert [len(files) for files, _ in seen.values()] == [2, 2, 2, 2]  # 8 files, 4 workers
    assert set().union(*shares) == {f"{remote}/part-{i:02d}.csv" for i in range(8)}
    assert sum(rows for _, rows in seen.values()) == 342  # every row once


def test_a_bad_row_in_a_remote_shard_is_named_by_its_url_and_line(s3, tmp_path):
    from k2e_core.errors import SpecError
    from k2e_core.steps import job

    _, local = _penguin_shards(tmp_path, 4)
    lines = (local / "part-02.csv").read_text().splitlines()
    lines[6] = lines[6].replace(lines[6].split(",")[2], "n/a?", 1)
    (local / "part-02.csv").write_text("\n".join(lines) + "\n")
    remote = _upload(s3, local, "bad")
    spec = {**_penguin_job(f"{remote}/*", tmp_path), "storage": {"options": s3}}
    with pytest.raises(SpecError) as err:
        job.validate(spec)
    assert f"{remote}/part-02.csv line 7" in str(err.value)
    assert "/tmp" not in str(err.value)


def test_a_remote_shard_with_other_columns_is_named(s3, tmp_path):
    from k2e_core.errors import SpecError
    from k2e_core.steps import job

    _, local = _penguin_shards(tmp_path, 3)
    part = local / "part-01.csv"
    import pandas as pd

    pd.read_csv(part).drop(columns="island").to_csv(part, index=False)
    remote = _upload(s3, local, "columns")
    spec = {**_penguin_job(f"{remote}/*", tmp_path), "storage": {"options": s3}}
    with pytest.raises(SpecError) as err:
        job.validate(spec)
    assert f"{remote}/part-01.csv has the header" in str(err.value)


@pytest.mark.slow
def test_large_remote_tfrecords_are_checked_from_their_start_and_train(s3, tmp_path, tf):
    """Digits as gzipped TFRecord shards larger than the data check's share: the check reads
    each shard's start only (cut after its last whole record) and training reads them all."""
    from k2e_core.steps import job

    out = tmp_path / "digits"
    out.mkdir()
    path = str(out / "all.tfrecord")
    real_data.write_digits_tfrecord(path)
    records = list(tf.data.TFRecordDataset(path).as_numpy_iterator())
    os.remove(path)
    for i, part in enumerate(np.array_split(np.arange(len(records)), 4)):
        with tf.io.TFRecordWriter(str(out / f"digits-{i}.tfrecord.gz"), "GZIP") as w:
            for r in part:
                w.write(records[r])
    remote = _upload(s3, out, "digits")
    spec = {
        "model": {"factory": factory("digits_model")},
        "model_dir": str(tmp_path / "model"),
        "data": {
            "train": {"files": f"{remote}/*"},
            "labels": "digit",
            "decode": {"image": {"format": "png"}},
            "batch_size": 32,
            "scan_mb": 0.1,  # 25 kB of each 4 shards: about 60 of their 450 records
        },
        "train": {"steps": 150},
        "run_config": {"tf_random_seed": 1, "log_every_secs": 60},
        "storage": {"options": s3},
    }
    checked = job.validate(spec)["checked"]["data.train"]
    assert not checked["complete"] and 100 < checked["rows"] < len(records) / 2
    assert job.train_step(spec)["streamed"]["peak_files"] <= 8
    assert job.evaluate_step(spec)["metrics"]["accuracy"] > 0.8


def test_remote_eval_data_has_the_digest_of_the_same_files_on_disk(s3, tmp_path):
    from k2e_core.inputs import data
    from k2e_core.steps import job

    _, local = _penguin_shards(tmp_path, 3, gzipped={0})
    remote = _upload(s3, local, "digest")
    spec = {**_penguin_job(f"{remote}/*", tmp_path), "storage": {"options": s3}}
    with job.open_job(spec, access="inspect") as j:
        streamed = data.fingerprint(j.data.source("train"))
    with job.open_job(_penguin_job(str(local / "*"), tmp_path), access="inspect") as j:
        assert data.fingerprint(j.data.source("train")) == streamed
    assert gzip.decompress((local / "part-00.csv.gz").read_bytes()).startswith(b"species")


@pytest.mark.slow
def test_cached_records_download_each_remote_file_once(s3, tmp_path):
    """data.cache keeps the parsed records after the first epoch: no download after it.
    (The checks before training read the first rows too: up to local_files downloads.)"""
    from k2e_core.steps import job

    frame, local = _penguin_shards(tmp_path, 4)
    remote = _upload(s3, local, "cached")
    downloads = {}
    for cache in (True, False):
        data = {"batch_size": 16, "cache": cache, "local_files": 3}
        spec = {
            **_penguin_job(f"{remote}/*", tmp_path / str(cache), **data),
            "storage": {"options": s3},
        }
        spec["train"]["steps"] = 4 * len(frame) // 16  # four epochs
        downloads[cache] = job.train_step(spec)["streamed"]["downloads"]
    assert 4 <= downloads[True] <= 4 + 3
    assert downloads[False] >= 4 * 4


def test_a_downloaded_file_logs_its_size_against_its_total(tmp_path, caplog):
    import uuid

    from k2e_core import storage

    url = f"memory://k2e-{uuid.uuid4().hex}/data.bin"
    storage.write_bytes(url, b"x" * 300_000)
    with caplog.at_level("INFO", logger="k2e.storage"):
        storage.fetch(url, str(tmp_path))
    assert "1/1 files, 0.3/0.3 MB" in caplog.text
