"""Bad data is found before training and named by file, line (or record), column and fix;
what still surfaces mid-run is one line naming the files and column, never only
TensorFlow's `Graph execution error`."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from k2e_core import cli


def _iris_rows(example_data, copies=1):
    with open(example_data / "iris_train.csv") as f:
        header, *rows = f.read().splitlines()
    return header, rows * copies


def _write(path, header, rows):
    path.write_text("\n".join([header, *rows]) + "\n")
    return str(path)


def _spec_file(tmp_path, spec):
    path = tmp_path / "job.json"
    path.write_text(json.dumps(spec))
    return str(path)


def _cli(capsys, *args):
    code = cli.main(list(args))
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def _replace(rows, index, row):
    rows = list(rows)
    rows[index] = row
    return rows


CASES = {
    # name: (rows -> rows, expected message part)
    "ragged row": (
        lambda rows: _replace(rows, 40, rows[40] + ",7"),
        "line 42 has 6 fields, the header 5; fix the row",
    ),
    "text beyond the type sample": (
        lambda rows: _replace(rows, 4998, "5.1,abc,1.4,0.2,0"),
        "line 5000 column 'sepal_width': 'abc' is not a number",
    ),
    "label outside the classes": (
        lambda rows: _replace(rows, 148, "5.1,3.5,1.4,0.2,7"),
        "line 150 column 'species': label 7 is outside the model's 3 classes (0..2)",
    ),
    "empty cell": (
        lambda rows: _replace(rows, 9, "5.1,,1.4,0.2,0"),
        "line 11 column 'sepal_width' is missing ('')",
    ),
    "8 MB field": (
        lambda rows: _replace(rows, 2, "5.1,3.5,1.4,0.2," + "1" * 8_000_000),
        "line 4: field larger than field limit",
    ),
    "fractional class id": (
        lambda rows: _replace(rows, 20, "5.1,3.5,1.4,0.2,1.5"),
        "line 22 column 'species': label 1.5 is not a class id (0..2)",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_rows_stop_validate_and_run_with_file_line_column_and_exit_2(
    case, iris_spec, example_data, tmp_path, capsys
):
    change, expected = CASES[case]
    header, rows = _iris_rows(example_data, copies=50)
    train = _write(tmp_path / "train.csv", header, change(rows))
    iris_spec["data"]["train"] = {"files": train}
    path = _spec_file(tmp_path, iris_spec)
    for command in ("validate", "run"):
        code, err = _cli(capsys, command, path)
        assert code == 2 and len(err) == 1, err
        assert (
            err[0].startswith(f"k2e: error: data.train.files: {train} ") and expected in err[0]
        ), err
    assert not os.path.exists(iris_spec["model_dir"] + "/model.ckpt-0.index")
    assert not os.path.exists(iris_spec["export"]["base"])


def test_a_sample_beyond_the_budget_and_every_row_with_full(
    iris_spec, example_data, tmp_path, capsys
):
    header, rows = _iris_rows(example_data, copies=200)  # 24,000 rows, about 0.5 MB
    rows[-10] = "5.1,3.5,1.4,0.2,9"
    iris_spec["data"]["train"] = {"files": _write(tmp_path / "train.csv", header, rows)}
    iris_spec["data"]["scan_mb"] = 0.1
    from k2e_core.steps import job

    checked = job.validate(iris_spec)["checked"]["data.train"]
    assert not checked["complete"] and 0 < checked["rows"] < len(rows)
    code, err = _cli(capsys, "validate", _spec_file(tmp_path, iris_spec), "--full")
    assert code == 2 and f"line {len(rows) - 8} column 'species': label 9" in err[0], err


def test_an_error_that_surfaces_mid_run_names_files_and_column(
    iris_spec, example_data, tmp_path, capsys
):
    header, rows = _iris_rows(example_data)
    train = _write(tmp_path / "train.csv", header, _replace(rows, 30, "5.1,,1.4,0.2,0"))
    iris_spec["data"]["train"] = {"files": train}
    iris_spec["data"]["scan_mb"] = 0  # not checked: TensorFlow meets it
    code, err = _cli(capsys, "train", _spec_file(tmp_path, iris_spec))
    assert code == 2 and not any("Traceback" in line for line in err), err
    assert err[-1].startswith(f"k2e: error: data.train.files: {train} column 'sepal_width': ")
    assert "is required but missing" in err[-1] and "k2e validate --full" in err[-1]
    assert "Graph execution error" not in err[-1]


def test_files_of_one_split_must_share_their_header(iris_spec, example_data, tmp_path):
    from k2e_core.errors import SpecError
    from k2e_core.steps import job

    header, rows = _iris_rows(example_data)
    _write(tmp_path / "a.csv", header, rows)
    columns = header.split(",")
    _write(
        tmp_path / "b.csv", ",".join(columns[::-1]), [",".join(r.split(",")[::-1]) for r in rows]
    )
    iris_spec["data"]["train"] = {"files": str(tmp_path / "*.csv")}
    with pytest.raises(SpecError, match=r"b.csv has the header .* but .*a.csv has"):
        job.validate(iris_spec)


def test_tfrecord_and_npz_problems_are_named_by_record_and_row(example_data, tmp_path, tf):
    from k2e_core.errors import SpecError
    from k2e_core.steps import job
    from tests.conftest import EXAMPLES

    with tf.io.TFRecordWriter(str(tmp_path / "bad.tfrecord")) as writer:
        for i in range(260):
            values = [0.0] * (1000 if i != 249 else 999)  # past the records read for the types
            feature = {
                "posts_input": tf.train.Feature(float_list=tf.train.FloatList(value=values)),
                "labels": tf.train.Feature(float_list=tf.train.FloatList(value=[1.0] + [0.0] * 19)),
            }
            writer.write(
                tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
            )
    spec = {
        "model": {"factory": os.path.join(EXAMPLES, "models.py") + ":bag_of_words_model"},
        "model_dir": str(tmp_path / "model"),
        "data": {"train": {"files": str(tmp_path / "bad.tfrecord")}},
        "train": {"steps": 1},
    }
    with pytest.raises(
        SpecError,
        match=r"bad.tfrecord record 250 feature 'posts_input' holds 999 "
        "values, earlier records 1000",
    ):
        job.validate(spec)

    with np.load(example_data / "two_io_train.npz") as arrays:
        arrays = dict(arrays)
    arrays["input_a"][12, 3] = np.nan
    np.savez(tmp_path / "nan.npz", **arrays)
    spec = {
        "model": {"factory": os.path.join(EXAMPLES, "models.py") + ":two_input_two_output_model"},
        "model_dir": str(tmp_path / "model2"),
        "data": {"train": {"files": str(tmp_path / "nan.npz")}},
        "train": {"steps": 1},
    }
    with pytest.raises(SpecError, match=r"nan.npz row 13 column 'input_a' is missing"):
        job.validate(spec)
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04 not really a zip archive")
    spec["data"]["train"]["files"] = str(tmp_path / "corrupt.npz")
    with pytest.raises(
        SpecError, match=r"data.train.files: .*corrupt.npz is not a NumPy .npz file"
    ):
        job.validate(spec)


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("missing", "fill", "data.missing"),
        ("missing", {"sepal_width": {"mean": 1}}, "data.missing: Value error, missing.sepal_width"),
        ("missing", {"nope": 1.0}, "data.missing.nope: 'nope' is not a column the job reads"),
        ("missing", {"species": 0}, "data.missing.species: a missing label cannot be filled"),
        ("columns", {"sepal_width": "text"}, "data.columns.sepal_width"),
        (
            "decode",
            {"sepal_width": {"format": "png"}},
            "data.decode.sepal_width: an image column must feed one model input on its own",
        ),
        ("label_vocabulary", ["a", "a", "b"], "data.label_vocabulary.species: lists a class twice"),
        ("scan_mb", -1, "data.scan_mb"),
        ("na_values", "NA", "data.na_values"),
    ],
)
def test_bad_values_of_the_data_fields_are_one_line_errors(
    field, value, expected, iris_spec, tmp_path, capsys
):
    iris_spec["data"][field] = value
    code, err = _cli(capsys, "validate", _spec_file(tmp_path, iris_spec))
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("k2e: error: ") and expected.split(": ")[0] in err[0], err
    if ": " in expected:
        assert expected.split(": ", 1)[1].removeprefix("Value error, ") in err[0], err


def test_the_schema_documents_every_data_field(capsys):
    assert cli.main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    data = schema["$defs"]["DataSpec"]["properties"]
    for name in ("columns", "na_values", "missing", "label_vocabulary", "decode", "scan_mb"):
        assert data[name].get("description"), name
    assert set(schema["$defs"]["ImageDecode"]["properties"]) == {"format", "resize", "channels"}


TAGS_MODEL = """
import tensorflow as tf

def build():
    tags = tf.keras.Input(shape=(2,), dtype=tf.string, name="tags")
    ids = tf.keras.layers.StringLookup(vocabulary=["a", "b"])(tags)
    hot = tf.keras.layers.CategoryEncoding(num_tokens=3, output_mode="multi_hot")(ids)
    model = tf.keras.Model(tags, tf.keras.layers.Dense(1, activation="sigmoid")(hot))
    model.compile(optimizer="adam", loss="binary_crossentropy")
    return model
"""


def test_a_missing_value_in_a_list_of_texts_is_named(tmp_path, tf):
    from k2e_core.errors import SpecError
    from k2e_core.steps import job

    with tf.io.TFRecordWriter(str(tmp_path / "tags.tfrecord")) as writer:
        for i in range(20):
            tags = [b"a", b"b"] if i != 7 else [b"a", b""]
            feature = {
                "tags": tf.train.Feature(bytes_list=tf.train.BytesList(value=tags)),
                "y": tf.train.Feature(float_list=tf.train.FloatList(value=[i % 2])),
            }
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            writer.write(example.SerializeToString())
    (tmp_path / "tags_model.py").write_text(TAGS_MODEL)
    spec = {
        "model": {"factory": str(tmp_path / "tags_model.py") + ":build"},
        "model_dir": str(tmp_path / "model"),
        "data": {"train": {"files": str(tmp_path / "tags.tfrecord")}, "labels": "y"},
        "train": {"steps": 1},
    }
    with pytest.raises(
        SpecError, match=r"tags.tfrecord record 8 column 'tags' is missing \(\['a', ''\]\)"
    ):
        job.validate(spec)
