"""Input pipelines from CSV, TFRecord and NPZ files, local or at fsspec URLs."""

from __future__ import annotations

import csv
import gzip
import os

import fsspec
import numpy as np
import pytest


def test_csv_columns_are_stacked_into_the_model_input_in_file_order(iris_spec, tf):
    from k2e_core.steps import job

    with job.open_job(iris_spec) as j:
        features, labels = __import__("k2e_core.inputs.pipeline", fromlist=["x"]).first_batch(
            j.data.plan, j.data.source("train"), j.spec.data, 5
        )
    with open(iris_spec["data"]["train"]["files"]) as f:
        rows = list(csv.DictReader(f))[:5]
    expected = np.array(
        [
            [float(r[c]) for c in ("sepal_length", "sepal_width", "petal_length", "petal_width")]
            for r in rows
        ],
        np.float32,
    )
    np.testing.assert_allclose(features["dense_input"], expected)
    assert features["dense_input"].dtype == np.float32
    assert labels.tolist() == [int(r["species"]) for r in rows]


def test_a_float_column_whose_first_rows_hold_whole_numbers_is_read_as_float(iris_spec, tmp_path):
    """Writers often print 1.0 as "1": the column's type comes from many rows, not the first."""
    from k2e_core.steps import job

    with open(iris_spec["data"]["train"]["files"]) as f:
        header, *rows = f.read().splitlines()
    whole = ["5,3,1,0," + rows[0].rsplit(",", 1)[1]]  # every measurement a whole number
    path = tmp_path / "whole-first.csv"
    path.write_text("\n".join([header, *whole, *rows]) + "\n")
    spec = dict(iris_spec, data=dict(iris_spec["data"], train={"files": str(path)}))
    with job.open_job(spec) as j:
        assert {
            c.dtype for name, c in j.data.source("train").columns.items() if name != "species"
        } == {"float"}
        assert j.data.source("train").columns["species"].dtype == "int"
    assert job.train_step(spec)["global_step"] == 60


def test_data_at_memory_urls_split_over_several_gzipped_files(iris_spec, tmp_path):
    from k2e_core.steps import job

    memory = fsspec.filesystem("memory")
    with open(iris_spec["data"]["train"]["files"]) as f:
        header, *rows = f.read().splitlines()
    for i in range(3):
        part = "\n".join([header, *rows[i::3]]) + "\n"
        memory.pipe(f"/k2e-data/{tmp_path.name}/train-{i}.csv.gz", gzip.compress(part.encode()))
    spec = dict(
        iris_spec,
        data=dict(
            iris_spec["data"], train={"files": f"memory://k2e-data/{tmp_path.name}/train-*.csv.gz"}
        ),
    )
    checked = job.validate(spec)
    assert checked["train_files"] == 3
    result = job.train_step(spec)
    assert result["global_step"] == 60


def test_sample_weight_column_changes_training(iris_spec, tmp_path):
    from k2e_core.steps import job

    with open(iris_spec["data"]["train"]["files"]) as f:
        lines = f.read().splitlines()
    weighted = tmp_path / "weighted.csv"
    # weight 0 for every species-0 row: the model never learns species 0
    weighted.write_text(
        "\n".join(
            [lines[0] + ",w"]
            + [line + ("," + ("0" if line.endswith(",0") else "1")) for line in lines[1:]]
        )
        + "\n"
    )
    spec = dict(
        iris_spec,
        data=dict(iris_spec["data"], train={"files": str(weighted)}, sample_weight="w"),
        train={"steps": 300},
    )
    weighted_run = job.run(spec)
    plain_run = job.run(
        dict(
            spec,
            model_dir=str(tmp_path / "plain"),
            export={"base": str(tmp_path / "plain-export")},
            data=dict(spec["data"], sample_weight=None),
        )
    )
    assert weighted_run["metrics"]["accuracy"] < plain_run["metrics"]["accuracy"]


def test_eval_files_are_checked_too(iris_spec, tmp_path):
    from k2e_core.errors import SpecError
    from k2e_core.steps import job

    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    spec = dict(iris_spec, data=dict(iris_spec["data"], eval={"files": str(other)}))
    with pytest.raises(
        SpecError, match=r"data.features.dense_input: columns .* not in data.eval files"
    ):
        job.validate(spec)


def test_tfrecord_feature_width_must_match_the_model_input(example_data, tmp_path):
    from k2e_core.errors import SpecError
    from k2e_core.steps import job
    from tests.conftest import EXAMPLES

    spec = {
        "model": {
            "factory": os.path.join(EXAMPLES, "models.py") + ":bag_of_words_model",
            "factory_kwargs": {"vocab_size": 500},
        },
        "model_dir": str(tmp_path / "model"),
        "data": {"train": {"files": str(example_data / "bow_train.tfrecord")}},
        "train": {"steps": 1},
    }
    with pytest.raises(
        SpecError, match=r"give 1000 values per example but the model input has shape \[500\]"
    ):
        job.validate(spec)
