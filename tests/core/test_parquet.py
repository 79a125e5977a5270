"""Parquet as data platforms hand it over: written by pandas (`to_parquet`, categorical and
nullable dtypes) and pyarrow (several row groups, dictionary encoding, snappy and zstd), a
hive-partitioned dataset, and files on the S3 server. k2e's evaluation is compared with Keras
`evaluate` on the same rows."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tests import real_data
from tests.core.test_real_data import _assert_evaluates_as_keras, _spec, _trained_keras
from tests.real_data import PENGUIN_MEASUREMENTS

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

SPECIES = {"Adelie": 0, "Chinstrap": 1, "Gentoo": 2}
#: penguin_mixed_model's inputs, each fed by the column of its name (measurements: four).
MIXED_FEATURES = {
    "island": "island",
    "sex": "sex",
    "year": "year",
    "measurements": PENGUIN_MEASUREMENTS,
}


def _assert_mixed_evaluates_as_keras(spec, result, rows):
    """The job's eval metrics equal Keras `evaluate` of its trained mixed-input model on
    `rows`, in the order k2e reads them."""
    model = _trained_keras(spec)
    model.compile(loss=model.loss, metrics=["accuracy"])
    loss, accuracy = model.evaluate(
        {
            "island": rows[["island"]].to_numpy(),
            "sex": rows[["sex"]].to_numpy(),
            "year": rows[["year"]].to_numpy(np.int64),
            "measurements": rows[PENGUIN_MEASUREMENTS].to_numpy(np.float32),
        },
        rows["species"].map(SPECIES).to_numpy(),
        batch_size=512,
        verbose=0,
    )
    assert result["metrics"]["loss"] == pytest.approx(loss, rel=1e-4)
    assert result["metrics"]["accuracy"] == pytest.approx(accuracy, abs=1e-6)


def _digits_spec(tmp_path, path, **kwargs):
    """A job training ink_model on the `pixels` lists of a digits Parquet file."""
    return _spec(
        tmp_path, "ink_model", path, labels="digit", features={"pixels": "pixels"}, **kwargs
    )


def _pandas_penguins():
    """penguins as a pandas user has them before to_parquet: text as categoricals, the year
    as a nullable integer, measurements with NaN."""
    frame = real_data.penguins()
    return frame.astype(
        {"species": "category", "island": "category", "sex": "category", "year": "Int64"}
    )


@pytest.mark.slow
def test_pandas_parquet_with_missing_values_evaluates_as_keras_on_the_same_rows(tmp_path):
    from k2e_core.steps import job

    frame = _pandas_penguins()
    path = tmp_path / "penguins.parquet"
    frame.to_parquet(path)  # categoricals dictionary-encoded, NaN as nulls
    assert pa.types.is_dictionary(pq.read_schema(path).field("species").type)
    spec = _spec(
        tmp_path,
        "penguin_model",
        path,
        missing="drop",
        features={"measurements": PENGUIN_MEASUREMENTS},
        labels="species",
        batch_size=512,
    )
    rows = frame[["species", *PENGUIN_MEASUREMENTS]].dropna()
    checked = job.validate(spec)
    assert checked["checked"]["data.train"] == {
        "rows": len(frame),
        "complete": True,
        "dropped": len(frame) - len(rows),
    }
    assert checked["label_vocabulary"] == {"species": sorted(SPECIES)}
    result = job.run(spec)
    assert result["metrics"]["accuracy"] > 0.9
    _assert_evaluates_as_keras(spec, result, rows.astype({"species": str}))


def test_a_null_label_is_named_by_file_row_group_row_and_column(tmp_path):
    from k2e_core import cli

    frame = real_data.penguins()[["species", *PENGUIN_MEASUREMENTS]].dropna()
    frame = frame.reset_index(drop=True)
    frame.loc[123, "species"] = None
    path = tmp_path / "penguins.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=50)
    spec = _spec(
        tmp_path,
        "penguin_model",
        path,
        features={"measurements": PENGUIN_MEASUREMENTS},
        labels="species",
    )
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(spec))
    from k2e_core.steps import job

    assert cli.main(["validate", str(job_file)]) == 2
    with pytest.raises(Exception) as caught:
        job.validate(spec)
    assert "penguins.parquet row 124 (row group 2) column 'species' is missing" in str(caught.value)
    assert not (tmp_path / "model").exists() or not list((tmp_path / "model").iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("compression", ["snappy", "zstd"])
def test_pyarrow_files_with_row_groups_and_dictionaries_train_like_keras(tmp_path, compression):
    """Two files written by pyarrow, 40-row row groups, dictionary-encoded text: the
    mixed-input model (text, integer and numeric inputs) evaluates as Keras does."""
    from k2e_core.steps import job

    frame = real_data.penguins().dropna().reset_index(drop=True)
    frame = frame[["species", "island", "sex", "year", *PENGUIN_MEASUREMENTS]]
    half = len(frame) // 2
    for i, part in enumerate((frame.iloc[:half], frame.iloc[half:])):
        table = pa.Table.from_pandas(part, preserve_index=False)
        pq.write_table(
            table,
            tmp_path / f"part-{i}.parquet",
            row_group_size=40,
            compression=compression,
            use_dictionary=["species", "island", "sex"],
        )
    assert pq.ParquetFile(tmp_path / "part-0.parquet").num_row_groups > 3
    spec = _spec(
        tmp_path,
        "penguin_mixed_model",
        tmp_path / "part-*.parquet",
        steps=300,
        labels="species",
        features=MIXED_FEATURES,
        batch_size=64,
    )
    checked = job.validate(spec)
    assert checked["column_types"]["island"] == "string"
    assert checked["column_types"]["year"] == "int"
    with job.open_job(spec) as j:
        features, _ = j.data.first_batch("train", 8)
    assert [v.decode() for v in features["island"].reshape(-1)] == frame.island[:8].tolist()
    assert features["year"].reshape(-1).tolist() == frame.year[:8].tolist()
    result = job.run(spec)
    assert result["metrics"]["accuracy"] > 0.9
    _assert_mixed_evaluates_as_keras(spec, result, frame)


@pytest.mark.slow
def test_a_partitioned_dataset_gives_its_partition_column_as_a_feature(tmp_path):
    """pyarrow's write_to_dataset with island as the partition: the directory is the data,
    `island=Biscoe/...` folders give the island column, `_SUCCESS` is left alone."""
    from k2e_core.steps import job

    frame = real_data.penguins().dropna().reset_index(drop=True)
    frame = frame[["species", "island", "sex", "year", *PENGUIN_MEASUREMENTS]]
    root = tmp_path / "penguins"
    pq.write_to_dataset(
        pa.Table.from_pandas(frame, preserve_index=False), root, partition_cols=["island"]
    )
    (root / "_SUCCESS").write_text("")
    assert sorted(p.name for p in root.iterdir() if p.is_dir())[0] == "island=Biscoe"
    spec = _spec(
        tmp_path,
        "penguin_mixed_model",
        root,
        steps=300,
        labels="species",
        features=MIXED_FEATURES,
        batch_size=512,
    )
    checked = job.validate(spec)
    assert checked["column_types"]["island"] == "string"
    assert checked["checked"]["data.train"]["rows"] == len(frame)
    result = job.run(spec)
    assert result["metrics"]["accuracy"] > 0.9
    # the dataset's rows in the order k2e reads them: folder by folder
    ordered = frame.sort_values("island", kind="stable")
    _assert_mixed_evaluates_as_keras(spec, result, ordered)


@pytest.mark.parametrize("input_shape", ["(64,)", "(None,)", "ragged"])
def test_a_list_column_is_a_variable_length_feature(tmp_path, input_shape):
    """The ids of a digit's inked pixels as a pyarrow list<int64> column, fed to an input
    padded to 64, to the longest row of each batch, or kept ragged: each evaluates as Keras
    does on the same lists."""
    from k2e_core.estimator.compat import tf
    from k2e_core.steps import job

    path = tmp_path / "digits.parquet"
    real_data.write_digits_parquet(str(path))
    ragged = input_shape == "ragged"
    spec = _digits_spec(
        tmp_path,
        path,
        steps=150,
        factory_kwargs={"width": 64 if input_shape == "(64,)" else None, "ragged": ragged},
        batch_size=64,
    )
    lists = pq.read_table(path).column("pixels").to_pylist()
    with job.open_job(spec) as j:
        features, _ = j.data.first_batch("train", 4)
    if ragged:
        assert features["pixels"].to_list() == lists[:4]
    else:
        longest = max(len(x) for x in lists[:4])
        assert features["pixels"].shape == (4, 64 if input_shape == "(64,)" else longest)
        assert [row[row > 0].tolist() for row in features["pixels"]] == lists[:4]
    result = job.run(spec)
    assert result["metrics"]["accuracy"] > 0.6
    if ragged:
        pixels = tf.ragged.constant(lists, dtype=tf.int64)
    else:  # padding ids are masked: padding to 64 is padding to each batch's longest
        pixels = np.array([x + [0] * (64 - len(x)) for x in lists], np.int64)
    digits = pq.read_table(path).column("digit").to_numpy()
    loss, accuracy = _trained_keras(spec).evaluate(pixels, digits, batch_size=512, verbose=0)
    assert result["metrics"]["loss"] == pytest.approx(loss, rel=1e-4)
    assert result["metrics"]["accuracy"] == pytest.approx(accuracy, abs=1e-6)


def test_a_list_longer_than_its_input_is_named_by_file_row_group_and_row(tmp_path):
    from k2e_core.errors import SpecError
    from k2e_core.steps import job

    path = tmp_path / "digits.parquet"
    real_data.write_digits_parquet(str(path), rows=200, row_group_size=50)
    spec = _digits_spec(tmp_path, path, factory_kwargs={"width": 30})
    lists = pq.read_table(path).column("pixels").to_pylist()
    row = next(i for i, x in enumerate(lists) if len(x) > 30)
    with pytest.raises(SpecError) as caught:
        job.validate(spec)
    assert (
        f"digits.parquet row {row + 1} (row group {row // 50}) column 'pixels' holds "
        f"{len(lists[row])} values, more than the input's 30" in str(caught.value)
    )


def test_a_null_list_is_empty_and_a_null_inside_a_list_is_named(tmp_path):
    from k2e_core.errors import SpecError
    from k2e_core.steps import job

    path = tmp_path / "digits.parquet"
    real_data.write_digits_parquet(str(path), rows=200, row_group_size=50)
    table = pq.read_table(path)
    lists = table.column("pixels").to_pylist()
    lists[0] = None  # no ink recorded
    spec = _digits_spec(tmp_path, path, factory_kwargs={"width": 64})

    def write(pixels):
        pq.write_table(table.set_column(0, "pixels", pa.array(pixels)), path, row_group_size=50)

    write(lists)
    assert job.validate(spec)["checked"]["data.train"]["rows"] == 200
    with job.open_job(spec) as j:
        features, _ = j.data.first_batch("train", 2)
    assert features["pixels"][0].tolist() == [0] * 64
    lists[61] = [lists[61][0], None, *lists[61][1:]]
    write(lists)
    with pytest.raises(SpecError) as caught:
        job.validate(spec)
    assert (
        "digits.parquet row 62 (row group 1) column 'pixels' holds a null inside its list"
        in str(caught.value)
    )


def test_a_timestamp_column_is_refused_only_when_the_job_uses_it(tmp_path):
    import pandas as pd

    from k2e_core.errors import SpecError
    from k2e_core.steps import job

    frame = real_data.penguins()[["species", *PENGUIN_MEASUREMENTS]].dropna()
    frame["observed"] = pd.Timestamp("2008-11-11") + pd.to_timedelta(range(len(frame)), "D")
    path = tmp_path / "penguins.parquet"
    frame.to_parquet(path)
    spec = _spec(
        tmp_path,
        "penguin_model",
        path,
        features={"measurements": PENGUIN_MEASUREMENTS},
        labels="species",
    )
    assert job.validate(spec)["column_types"]["bill_length_mm"] == "float"
    spec["data"]["features"] = {"measurements": [*PENGUIN_MEASUREMENTS[:3], "observed"]}
    with pytest.raises(SpecError) as caught:
        job.validate(spec)
    text = str(caught.value)
    assert "column 'observed' of data.train files is timestamp[" in text
    assert "cast it to int64" in text and "\n" not in text


def test_workers_read_disjoint_row_groups_that_cover_the_file(tmp_path):
    from k2e_core.inputs import pipeline
    from k2e_core.steps import job

    frame = real_data.penguins()[["species", *PENGUIN_MEASUREMENTS]].dropna()
    path = tmp_path / "penguins.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=30)
    spec = _spec(
        tmp_path,
        "penguin_model",
        path,
        features={"measurements": PENGUIN_MEASUREMENTS},
        labels="species",
        shuffle_buffer=0,
    )
    seen = []
    with job.open_job(spec) as j:
        for index in range(3):
            fn = pipeline.input_fn(
                j.data.plan, j.data.source("train"), j.spec.data, training=False, shard=(index, 3)
            )
            rows = [
                tuple(np.round(x, 3))
                for features, _ in fn().as_numpy_iterator()
                for x in features["measurements"]
            ]
            seen.append(rows)
    assert all(seen) and sum(len(s) for s in seen) == len(frame)
    assert sorted(r for s in seen for r in s) == sorted(
        tuple(np.round(x, 3)) for x in frame[PENGUIN_MEASUREMENTS].to_numpy(np.float32)
    )


@pytest.mark.slow
def test_parquet_on_the_s3_server_trains_as_the_same_file_does_locally(s3, tmp_path, monkeypatch):
    """Also: only the chunks of the columns the job uses come from the server. A photo
    column of 10 MB is in the file and the input pipeline never reads it (fsspec's readahead
    cache would fetch 50 MB blocks: the whole file)."""
    import s3fs

    from k2e_core import storage
    from k2e_core.steps import job
    from tests.conftest import BUCKET

    frame = _pandas_penguins()
    frame["photo"] = [os.urandom(30_000) for _ in range(len(frame))]
    local = tmp_path / "penguins.parquet"
    frame.to_parquet(local, row_group_size=100)
    fetched = []
    cat_file, fetch_range = s3fs.S3FileSystem._cat_file, s3fs.core.S3File._fetch_range

    async def counted_cat_file(self, path, start=None, end=None, **kwargs):
        data = await cat_file(self, path, start=start, end=end, **kwargs)
        fetched.append(len(data))
        return data

    def counted_fetch_range(self, start, end):
        data = fetch_range(self, start, end)
        fetched.append(len(data))
        return data

    monkeypatch.setattr(s3fs.S3FileSystem, "_cat_file", counted_cat_file)
    monkeypatch.setattr(s3fs.core.S3File, "_fetch_range", counted_fetch_range)
    url = f"s3://{BUCKET}/tables/penguins.parquet"
    with storage.configured(s3):
        storage.upload([(str(local), url)])
    base = dict(
        missing="drop",
        features={"measurements": PENGUIN_MEASUREMENTS},
        labels="species",
        batch_size=512,
    )
    remote_spec = _spec(tmp_path / "remote", "penguin_model", url, **base)
    remote_spec["storage"] = {"options": s3}
    local_spec = _spec(tmp_path / "local", "penguin_model", local, **base)
    remote, here = job.run(remote_spec), job.run(local_spec)
    assert remote["metrics"] == pytest.approx(here["metrics"], rel=1e-6)
    rows = frame[["species", *PENGUIN_MEASUREMENTS]].dropna().astype({"species": str})
    _assert_evaluates_as_keras(remote_spec, remote, rows)
    with job.open_job(remote_spec) as j:  # read at its URL: neither fetched nor streamed
        source = j.data.source("train")
        assert source.files == [url] and source.stream is None
        fetched.clear()
        features, _ = j.data.first_batch("train", 400)  # the checks, then every row
        assert not [f for _, _, files in os.walk(j.staging_dir) for f in files if "parquet" in f]
    assert len(features["measurements"]) == len(rows)
    assert 0 < sum(fetched) < 1e6 < os.path.getsize(local) / 10  # the photos stay there
