"""Data as users have it: public datasets that ship inside packages, written as pandas and
TFRecord writers write them, with the Keras models people write for them. Numbers are
compared with what Keras `fit`/`evaluate` give on the same rows."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tests import real_data
from tests.real_data import PENGUIN_MEASUREMENTS, factory


def _spec(tmp_path, model, train, steps=200, eval_files=None, factory_kwargs=None, **data):
    spec = {
        "model": {"factory": factory(model), "factory_kwargs": factory_kwargs or {}},
        "model_dir": str(tmp_path / "model"),
        "data": {"train": {"files": str(train)}, "batch_size": 32, **data},
        "train": {"steps": steps},
        "run_config": {"tf_random_seed": 1, "log_every_secs": 1},
        "export": {"base": str(tmp_path / "export")},
    }
    if eval_files:
        spec["data"]["eval"] = {"files": str(eval_files)}
    return spec


def _assert_evaluates_as_keras(spec, result, rows):
    """The job's eval metrics equal Keras `evaluate` of its trained model on `rows` (species
    and the four measurements of the penguins)."""
    codes = rows["species"].map({"Adelie": 0, "Chinstrap": 1, "Gentoo": 2}).to_numpy()
    loss, accuracy = _trained_keras(spec).evaluate(
        rows[PENGUIN_MEASUREMENTS].to_numpy(np.float32), codes, batch_size=512, verbose=0
    )
    assert result["metrics"]["loss"] == pytest.approx(loss, rel=1e-4)
    assert result["metrics"]["accuracy"] == pytest.approx(accuracy, abs=1e-6)


#: penguin_adapted_model's inputs and the columns of real_data.penguin_notes() feeding them.
NOTES_FEATURES = {
    "island": "island",
    "sex": "sex",
    "year": "year",
    "notes": "notes",
    "measurements": PENGUIN_MEASUREMENTS[:3],
    "body_mass_g": "body_mass_g",
}


def _trained_keras(spec):
    """The Keras model holding the job's latest checkpoint, for Keras' own evaluate/predict."""
    from k2e_core.estimator import keras_copies
    from k2e_core.estimator.compat import tf
    from k2e_core.steps import job

    with job.open_job(spec) as j:
        model = keras_copies.keras_model_at(j.model, tf.train.latest_checkpoint(spec["model_dir"]))
        model.compile(
            optimizer=tf.keras.optimizers.legacy.SGD(), loss=j.model.loss, metrics=["accuracy"]
        )
        return model


# --------------------------------------------------------------------------- column order


def test_columns_in_any_order_give_what_keras_gives_on_the_same_rows(tmp_path):
    """wine as pandas writes it with the label first; features listed in another order than
    the file's, and the weight column between them."""
    from k2e_core.steps import job

    frame = real_data.sklearn_frame("wine")
    frame.insert(3, "w", 1.0)
    path = tmp_path / "wine.csv"
    frame.to_csv(path, index=False)
    features = [c for c in frame.columns if c not in ("target", "w")][::-1]
    spec = _spec(
        tmp_path,
        "wine_model",
        path,
        steps=300,
        batch_size=256,
        features={"x": features},
        labels="target",
        sample_weight="w",
    )
    assert job.validate(spec)["features"] == {"x": features}
    result = job.run(spec)
    assert result["metrics"]["accuracy"] > 0.9
    keras = _trained_keras(spec)
    loss, accuracy = keras.evaluate(
        frame[features].to_numpy(np.float32), frame["target"].to_numpy(), batch_size=256, verbose=0
    )
    assert result["metrics"]["loss"] == pytest.approx(loss, rel=1e-4)
    assert result["metrics"]["accuracy"] == pytest.approx(accuracy, abs=1e-6)


# --------------------------------------------------------------------------- sample weights


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_sample_weights_train_and_evaluate_as_keras_fit_does(tmp_path, fmt):
    """breast_cancer, weight 0 on every malignant (class 0) row, the weight column first:
    like Keras fit(sample_weight=...), the model stops predicting class 0; evaluation is
    weighted as Keras evaluate weighs it. From CSV and from Parquet as pandas writes them."""
    from k2e_core.estimator.compat import tf
    from k2e_core.steps import job

    frame = real_data.sklearn_frame("breast_cancer")
    frame.insert(0, "weight", (frame["target"] == 1).astype(float))
    path = tmp_path / f"cancer.{fmt}"
    if fmt == "csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    features = [c for c in frame.columns if c not in ("target", "weight")]
    x, y = frame[features].to_numpy(np.float32), frame["target"].to_numpy(np.float32)
    weights = frame["weight"].to_numpy(np.float32)
    spec = _spec(
        tmp_path,
        "cancer_model",
        path,
        steps=300,
        batch_size=1024,
        features={"x": features},
        labels="target",
        sample_weight="weight",
    )
    weighted = job.run(spec)
    recall_0 = float(
        ((_trained_keras(spec).predict(x, verbose=0)[:, 0] < 0.5) & (y == 0)).sum() / (y == 0).sum()
    )

    fit = real_data.cancer_model()
    ds = (
        tf.data.Dataset.from_tensor_slices((x, y, weights))
        .shuffle(1024, seed=1)
        .repeat()
        .batch(1024)
    )
    fit.fit(ds, steps_per_epoch=300, epochs=1, verbose=0)
    keras_recall_0 = float(
        ((fit.predict(x, verbose=0)[:, 0] < 0.5) & (y == 0)).sum() / (y == 0).sum()
    )

    plain = job.run(
        dict(
            spec,
            model_dir=str(tmp_path / "plain"),
            export={"base": str(tmp_path / "plain-export")},
            data=dict(spec["data"], sample_weight=None),
        )
    )
    plain_spec = dict(spec, model_dir=str(tmp_path / "plain"))
    plain_recall_0 = float(
        ((_trained_keras(plain_spec).predict(x, verbose=0)[:, 0] < 0.5) & (y == 0)).sum()
        / (y == 0).sum()
    )
    assert recall_0 < 0.5 and abs(recall_0 - keras_recall_0) < 0.1 and plain_recall_0 > 0.9, (
        recall_0,
        keras_recall_0,
        plain_recall_0,
    )
    loss, _ = _trained_keras(spec).evaluate(x, y, sample_weight=weights, batch_size=1024, verbose=0)
    assert weighted["metrics"]["loss"] == pytest.approx(loss, rel=1e-4)
    assert plain["metrics"]["loss"] != pytest.approx(weighted["metrics"]["loss"], rel=1e-2)


@pytest.mark.slow
def test_sample_weights_reach_every_output_of_a_multi_output_model(example_data, tmp_path):
    from k2e_core.steps import job
    from tests.conftest import EXAMPLES

    for split in ("train", "test"):
        with np.load(example_data / f"two_io_{split}.npz") as arrays:
            arrays = dict(arrays)
        arrays["w"] = (
            np.zeros(len(arrays["input_a"]), np.float32)
            if split == "test"
            else np.ones(len(arrays["input_a"]), np.float32)
        )
        np.savez(tmp_path / f"{split}.npz", **arrays)
    spec = {
        "model": {"factory": os.path.join(EXAMPLES, "models.py") + ":two_input_two_output_model"},
        "model_dir": str(tmp_path / "model"),
        "data": {
            "train": {"files": str(tmp_path / "train.npz")},
            "eval": {"files": str(tmp_path / "test.npz")},
            "sample_weight": "w",
        },
        "train": {"steps": 20},
    }
    job.train_step(spec)
    metrics = job.evaluate_step(spec)["metrics"]
    assert metrics["loss"] == 0.0  # every eval weight is 0: no output contributes
    spec["data"]["eval"] = {"files": str(tmp_path / "train.npz")}
    assert job.evaluate_step(spec)["metrics"]["loss"] > 0.1


# --------------------------------------------------------------------------- missing values


def test_missing_values_stop_validate_naming_column_file_and_line(tmp_path):
    from k2e_core import cli

    spec = _spec(
        tmp_path,
        "penguin_model",
        real_data.penguins_csv(),
        features={"measurements": PENGUIN_MEASUREMENTS},
        labels="species",
    )
    path = tmp_path / "job.json"
    path.write_text(json.dumps(spec))
    assert cli.main(["validate", str(path)]) == 2
    with pytest.raises(Exception) as caught:
        from k2e_core.steps import job

        job.validate(spec)
    text = str(caught.value)
    assert "penguins.csv line 5 column 'bill_length_mm' is missing ('NA')" in text
    assert "data.missing: drop" in text
    assert not os.path.exists(spec["export"]["base"])


def test_drop_skips_rows_with_missing_values_and_counts_them(tmp_path, caplog):
    from k2e_core.steps import job

    spec = _spec(
        tmp_path,
        "penguin_model",
        real_data.penguins_csv(),
        missing="drop",
        features={"measurements": PENGUIN_MEASUREMENTS},
        labels="species",
    )
    frame = real_data.penguins()[["species", *PENGUIN_MEASUREMENTS]]
    dropped = int(frame.isna().any(axis=1).sum())
    with caplog.at_level("INFO", logger="k2e"):
        checked = job.validate(spec)
    assert checked["checked"]["data.train"] == {
        "rows": len(frame),
        "complete": True,
        "dropped": dropped,
    }
    assert f"{dropped} with missing values skipped" in caplog.text
    result = job.run(dict(spec, data=dict(spec["data"], batch_size=512)))
    assert result["metrics"]["accuracy"] > 0.9
    _assert_evaluates_as_keras(spec, result, frame.dropna())
    from k2e_core.estimator.serving import predict_version

    served = predict_version(
        result["export_path"], [[39.1, 18.7, 181.0, 3750.0], [46.5, 13.5, 210.0, 4550.0]]
    )
    assert json.loads(json.dumps(served))["outputs"]["class"] == ["Adelie", "Gentoo"]


def test_fills_come_from_the_training_data_and_apply_in_the_serving_signature(tmp_path):
    from k2e_core.estimator.compat import tf
    from k2e_core.steps import job

    frame = real_data.penguins()
    spec = _spec(
        tmp_path,
        "penguin_model",
        real_data.penguins_csv(),
        features={"measurements": PENGUIN_MEASUREMENTS},
        labels="species",
        missing={
            "bill_length_mm": "median",
            "bill_depth_mm": "mean",
            "flipper_length_mm": "most_frequent",
            "body_mass_g": 4000,
        },
    )
    spec["export"]["serving_input"] = "tf_example"
    result = job.run(spec)
    fills = {
        "bill_length_mm": frame.bill_length_mm.median(),
        "bill_depth_mm": frame.bill_depth_mm.mean(),
        "flipper_length_mm": frame.flipper_length_mm.mode().min(),
        "body_mass_g": 4000.0,
    }
    with open(result["manifest"]) as f:
        recorded = json.load(f)["source"]["data"]["fills"]
    assert recorded == pytest.approx(fills)

    signature = tf.saved_model.load(result["export_path"]).signatures["serving_default"]

    def example(values):
        feature = {"measurements": tf.train.Feature(float_list=tf.train.FloatList(value=values))}
        return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()

    row = [39.1, 18.7, 181.0, 3750.0]
    filled = [fills["bill_length_mm"], 18.7, 181.0, 3750.0]
    got = signature(examples=tf.constant([example([np.nan, *row[1:]]), example(filled)]))
    np.testing.assert_allclose(got["species"][0], got["species"][1])
    keras = _trained_keras(spec)
    np.testing.assert_allclose(
        got["species"][1], keras.predict(np.array([filled], np.float32), verbose=0)[0], atol=1e-5
    )
    absent = tf.train.Example().SerializeToString()  # no feature at all: every column's fill
    every = [fills[c] for c in PENGUIN_MEASUREMENTS]
    np.testing.assert_allclose(
        signature(examples=tf.constant([absent]))["species"][0],
        keras.predict(np.array([every], np.float32), verbose=0)[0],
        atol=1e-5,
    )


# --------------------------------------------------------------------------- text labels


@pytest.mark.slow
def test_text_labels_train_like_class_ids_and_serving_returns_class_names(tmp_path):
    from k2e_core.estimator.compat import tf
    from k2e_core.steps import job

    frame = real_data.penguins().dropna(subset=PENGUIN_MEASUREMENTS)
    text = tmp_path / "penguins.csv"
    frame.to_csv(text, index=False)
    ids = tmp_path / "penguins-ids.csv"
    frame.assign(species=frame.species.map({"Adelie": 0, "Chinstrap": 1, "Gentoo": 2})).to_csv(
        ids, index=False
    )
    common = dict(features={"measurements": PENGUIN_MEASUREMENTS}, labels="species")
    spec = _spec(tmp_path, "penguin_model", text, **common)
    spec["model"]["export_outputs"] = {"species": {"kind": "classification"}}
    spec["export"]["serving_input"] = "tf_example"
    spec["data"]["batch_size"] = 512
    by_name = job.run(spec)
    codes = frame.species.map({"Adelie": 0, "Chinstrap": 1, "Gentoo": 2}).to_numpy()
    loss, accuracy = _trained_keras(spec).evaluate(
        frame[PENGUIN_MEASUREMENTS].to_numpy(np.float32), codes, batch_size=512, verbose=0
    )
    assert by_name["metrics"]["loss"] == pytest.approx(loss, rel=1e-4)
    assert by_name["metrics"]["accuracy"] == pytest.approx(accuracy, abs=1e-6) and accuracy > 0.9
    by_id = job.run(_spec(tmp_path / "ids", "penguin_model", ids, **common, batch_size=512))
    assert by_id["metrics"]["accuracy"] == pytest.approx(accuracy, abs=0.02)
    with open(by_name["manifest"]) as f:
        assert json.load(f)["source"]["data"]["label_vocabulary"] == {
            "species": ["Adelie", "Chinstrap", "Gentoo"]
        }
    evaluated = job.evaluate_step(spec)
    assert evaluated["confusion_matrix"]["categories"] == ["Adelie", "Chinstrap", "Gentoo"]

    loaded = tf.saved_model.load(by_name["export_path"])
    rows = frame.iloc[[0, 200, 300]]
    examples = []
    for _, row in rows.iterrows():
        feature = {
            "measurements": tf.train.Feature(
                float_list=tf.train.FloatList(
                    value=row[PENGUIN_MEASUREMENTS].astype(float).tolist()
                )
            )
        }
        examples.append(
            tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
        )
    classified = loaded.signatures["species"](inputs=tf.constant(examples))
    assert classified["classes"].numpy()[0].tolist() == [b"Adelie", b"Chinstrap", b"Gentoo"]
    predicted = loaded.signatures["serving_default"](examples=tf.constant(examples))
    assert [c.decode() for c in predicted["class"].numpy()] == rows["species"].tolist()


def test_a_label_outside_the_vocabulary_is_named_with_file_and_line(tmp_path):
    from k2e_core.errors import SpecError
    from k2e_core.steps import job

    frame = real_data.penguins().dropna(subset=PENGUIN_MEASUREMENTS)
    frame.to_csv(tmp_path / "train.csv", index=False)
    unseen = frame.copy()
    unseen.iloc[6, 0] = "Emperor"
    unseen.to_csv(tmp_path / "eval.csv", index=False)
    spec = _spec(
        tmp_path,
        "penguin_model",
        tmp_path / "train.csv",
        eval_files=tmp_path / "eval.csv",
        features={"measurements": PENGUIN_MEASUREMENTS},
        labels="species",
    )
    with pytest.raises(
        SpecError,
        match=r"eval.csv line 8 column 'species': label 'Emperor' is not "
        r"one of the classes \['Adelie', 'Chinstrap', 'Gentoo'\]",
    ):
        job.validate(spec)
    spec["data"]["label_vocabulary"] = ["Adelie", "Chinstrap"]
    with pytest.raises(SpecError, match="has 2 classes but output 'species' has 3"):
        job.validate(spec)


# --------------------------------------------------------------------------- text features


def _mixed_frame():
    frame = real_data.penguins().dropna(subset=PENGUIN_MEASUREMENTS)
    return frame[["species", "island", "sex", "year", *PENGUIN_MEASUREMENTS]]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["csv", "tfrecord", "npz", "parquet"])
def test_text_and_integer_categorical_features_feed_string_and_int_inputs(tmp_path, fmt):
    from k2e_core.steps import job

    frame = _mixed_frame()
    if fmt == "csv":
        path = tmp_path / "penguins.csv"
        frame.to_csv(path, index=False)  # sex: 9 empty cells
        missing = {"sex": "most_frequent"}
    elif fmt == "parquet":
        path = tmp_path / "penguins.parquet"  # categoricals, a nullable year; sex: 9 nulls
        frame.astype({"island": "category", "sex": "category", "year": "Int64"}).to_parquet(path)
        missing = {"sex": "most_frequent"}
    else:
        frame = frame.fillna({"sex": "NA"})  # what fillna leaves for text: a marker, missing too
        path = tmp_path / f"penguins.{fmt}"
        (real_data.write_frame_tfrecord if fmt == "tfrecord" else real_data.write_frame_npz)(
            frame, str(path)
        )
        missing = {"sex": "most_frequent"}
    spec = _spec(
        tmp_path,
        "penguin_mixed_model",
        path,
        steps=300,
        labels="species",
        missing=missing,
        features={
            "island": "island",
            "sex": "sex",
            "year": "year",
            "measurements": PENGUIN_MEASUREMENTS,
        },
    )
    checked = job.validate(spec)
    assert (
        checked["column_types"]["island"] == "string" and checked["column_types"]["year"] == "int"
    )
    assert checked["fills"] == {"sex": "male"}
    with job.open_job(spec) as j:
        features, labels = j.data.first_batch("train", 8)
    assert [v.decode() for v in features["island"].reshape(-1)] == frame.island.iloc[:8].tolist()
    assert (
        features["year"].dtype == np.int64
        and features["year"].reshape(-1).tolist() == frame.year.iloc[:8].tolist()
    )
    assert [v.decode() for v in features["sex"].reshape(-1)] == frame.sex.iloc[:8].replace(
        "NA", "male"
    ).fillna("male").tolist()
    result = job.run(spec)
    assert result["metrics"]["accuracy"] > 0.9


def test_declared_column_types_keep_a_zip_code_as_text(tmp_path):
    from k2e_core.errors import SpecError
    from k2e_core.steps import job

    rows = ["zip_code,bought"] + [
        f"{z},{int(z.startswith('0'))}"
        for z in ["02139", "10001", "02140", "94103", "01002", "60601"] * 20
    ]
    path = tmp_path / "zips.csv"
    path.write_text("\n".join(rows) + "\n")
    spec = _spec(
        tmp_path, "zip_model", path, steps=50, labels="bought", columns={"zip_code": "string"}
    )
    with job.open_job(spec) as j:
        features, _ = j.data.first_batch("train", 3)
    assert features["zip_code"].reshape(-1).tolist() == [b"02139", b"10001", b"02140"]
    assert job.run(spec)["metrics"]["accuracy"] == 1.0
    spec["data"]["columns"] = {"zip_code": "sting"}
    with pytest.raises(SpecError, match="data.columns.zip_code"):
        job.validate(spec)


# --------------------------------------------------------------------------- TFRecords


@pytest.mark.slow
@pytest.mark.parametrize("size", [8, 16])
def test_encoded_images_in_tfrecords_are_decoded_and_served_from_the_same_bytes(tmp_path, size):
    from k2e_core.estimator.compat import tf
    from k2e_core.steps import job

    images, labels = real_data.write_digits_tfrecord(str(tmp_path / "train.tfrecord"), rows=1500)
    real_data.write_digits_tfrecord(str(tmp_path / "all.tfrecord"))
    decode = {"image": {"format": "png", **({"resize": [size, size]} if size != 8 else {})}}
    spec = _spec(
        tmp_path,
        "digits_model",
        tmp_path / "train.tfrecord",
        steps=300,
        eval_files=tmp_path / "all.tfrecord",
        factory_kwargs={"size": size},
        labels="digit",
        decode=decode,
    )
    spec["export"]["serving_input"] = "tf_example"
    result = job.run(spec)
    assert result["metrics"]["accuracy"] > 0.85
    records = [
        r.numpy()
        for r in tf.data.TFRecordDataset(str(tmp_path / "all.tfrecord")).skip(1500).take(5)
    ]
    served = (
        tf.saved_model.load(result["export_path"])
        .signatures["serving_default"](examples=tf.constant(records))["digit"]
        .numpy()
    )
    keras = _trained_keras(spec)
    pixels = tf.image.resize(
        tf.constant(
            real_data.write_digits_tfrecord(str(tmp_path / "again.tfrecord"))[0][1500:1505]
        ),
        [size, size],
    ).numpy()
    np.testing.assert_allclose(served, keras.predict(pixels, verbose=0), atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("width", [64, None])
def test_variable_length_features_are_padded_to_the_input(tmp_path, width):
    from k2e_core.steps import job

    real_data.write_digits_tfrecord(str(tmp_path / "digits.tfrecord"))
    spec = _spec(
        tmp_path,
        "ink_model",
        tmp_path / "digits.tfrecord",
        steps=300,
        factory_kwargs={"width": width},
        labels="digit",
        features={"pixels": "pixels"},
    )
    with job.open_job(spec) as j:
        features, _ = j.data.first_batch("train", 4)
    lengths = (features["pixels"] > 0).sum(axis=1)
    assert len(set(lengths.tolist())) > 1
    assert features["pixels"].shape[1] == (width or lengths.max())
    result = job.run(spec)
    assert result["metrics"]["accuracy"] > 0.6


def test_a_variable_length_feature_longer_than_its_input_is_named(tmp_path):
    from k2e_core.errors import SpecError
    from k2e_core.steps import job

    real_data.write_digits_tfrecord(str(tmp_path / "digits.tfrecord"), rows=50)
    spec = _spec(
        tmp_path,
        "ink_model",
        tmp_path / "digits.tfrecord",
        factory_kwargs={"width": 10},
        labels="digit",
        features={"pixels": "pixels"},
    )
    with pytest.raises(
        SpecError,
        match=r"digits.tfrecord record 1 feature 'pixels' holds \d+ values, "
        "more than the input's 10",
    ):
        job.validate(spec)


@pytest.mark.slow
@pytest.mark.parametrize("serving_input", ["raw", "tf_example"])
def test_a_ragged_input_takes_each_row_at_its_own_length(tmp_path, serving_input):
    from k2e_core.estimator.compat import tf
    from k2e_core.steps import job

    real_data.write_digits_tfrecord(str(tmp_path / "digits.tfrecord"))
    spec = _spec(
        tmp_path,
        "ink_model",
        tmp_path / "digits.tfrecord",
        steps=300,
        factory_kwargs={"ragged": True},
        labels="digit",
        features={"pixels": "pixels"},
    )
    spec["export"]["serving_input"] = serving_input
    with job.open_job(spec) as j:
        features, _ = j.data.first_batch("train", 4)
    assert isinstance(features["pixels"], tf.RaggedTensor)
    assert len(set(features["pixels"].row_lengths().numpy().tolist())) > 1
    assert 0 not in features["pixels"].flat_values.numpy()  # nothing padded
    result = job.run(spec)  # the export is verified against Keras on the same rows
    assert result["metrics"]["accuracy"] > 0.6


def test_every_missing_marker_counts_whichever_ones_a_file_uses(tmp_path):
    """One file, three markers (what several writers appended to one CSV leave): each is
    missing, in the checks and in the pipeline."""
    from k2e_core.steps import job

    frame = real_data.penguins()[["species", *PENGUIN_MEASUREMENTS]]
    text = frame.to_csv(index=False, na_rep="NA").splitlines()
    text[4] = text[4].replace("NA", "null", 2)  # line 5: the first row without measurements
    text[-1] = "Gentoo,N/A,14.0,210,4600"
    path = tmp_path / "penguins.csv"
    path.write_text("\n".join(text) + "\n")
    spec = _spec(
        tmp_path,
        "penguin_model",
        path,
        missing={c: "median" for c in PENGUIN_MEASUREMENTS},
        features={"measurements": PENGUIN_MEASUREMENTS},
        labels="species",
        batch_size=400,
    )
    with job.open_job(spec) as j:
        features, _ = j.data.first_batch("train", 400)
        fills = j.data.plan.fills
    measurements = features["measurements"]
    assert len(measurements) == len(frame) and not np.isnan(measurements).any()
    assert measurements[3].tolist() == pytest.approx([fills[c] for c in PENGUIN_MEASUREMENTS])
    assert measurements[-1][0] == pytest.approx(fills["bill_length_mm"])
    spec["data"]["missing"] = "drop"
    assert job.validate(spec)["checked"]["data.train"]["dropped"] == 3


# --------------------------------------------------------------------------- preprocessing layers


@pytest.mark.slow
@pytest.mark.parametrize("fmt,serving_input", [("csv", "raw"), ("tfrecord", "tf_example")])
def test_models_with_adapted_preprocessing_layers_train_through_k2e_run(
    tmp_path, capsys, fmt, serving_input
):
    """StringLookup, IntegerLookup, TextVectorization, Normalization, Discretization and
    Hashing, adapted on the penguins: `k2e run` trains them from the file, its evaluation
    equals Keras `evaluate`, and the published SavedModel predicts what the user's own Keras
    model predicts with the trained weights."""
    from k2e_core import cli
    from k2e_core.estimator import keras_checkpoints
    from k2e_core.estimator.compat import tf

    frame = real_data.penguin_notes()
    path = tmp_path / f"penguins.{fmt}"
    if fmt == "csv":
        frame.to_csv(path, index=False)
    else:
        real_data.write_frame_tfrecord(frame, str(path))
    features = NOTES_FEATURES
    spec = _spec(
        tmp_path, "penguin_adapted_model", path, steps=300, labels="species", features=features
    )
    spec["export"]["serving_input"] = serving_input
    (tmp_path / "job.json").write_text(json.dumps(spec))
    capsys.readouterr()
    assert cli.main(["run", str(tmp_path / "job.json")]) == 0
    done = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    result = done["metrics"]
    assert result["accuracy"] > 0.95

    model = real_data.penguin_adapted_model()  # the user's model, adapted as they adapt it
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(spec["model_dir"]))
    trained = {
        tuple(shape): key
        for name, (key, shape) in keras_checkpoints.checkpoint_variables(reader).items()
        if not name.startswith("training/") and name.endswith(("kernel", "bias"))
    }
    assert len(trained) == len(model.trainable_weights) == 4  # each shape is unique here
    for weight in model.trainable_weights:
        weight.assign(reader.get_tensor(trained[tuple(weight.shape)]))
    columns = {
        name: frame[cols].to_numpy() if isinstance(cols, list) else frame[[cols]].to_numpy()
        for name, cols in features.items()
    }
    columns["measurements"] = columns["measurements"].astype(np.float32)
    columns["body_mass_g"] = columns["body_mass_g"].astype(np.float32)
    columns = {k: v.astype(object) if v.dtype == object else v for k, v in columns.items()}
    codes = frame.species.map({"Adelie": 0, "Chinstrap": 1, "Gentoo": 2}).to_numpy()
    loss, accuracy = model.evaluate(columns, codes, verbose=0)
    assert result["loss"] == pytest.approx(loss, rel=1e-5)
    assert result["accuracy"] == pytest.approx(accuracy, abs=1e-6)

    signature = tf.saved_model.load(done["export_path"]).signatures["serving_default"]
    rows = slice(0, 40)
    if serving_input == "raw":
        served = signature(**{k: tf.constant(v[rows]) for k, v in columns.items()})
    else:
        from k2e_core import signatures

        as_bytes = {
            k: np.vectorize(str.encode, otypes=[object])(v[rows]) if v.dtype == object else v[rows]
            for k, v in columns.items()
        }
        served = signature(examples=tf.constant(signatures.serialized_examples(as_bytes)))
    np.testing.assert_allclose(
        served["species"].numpy(),
        model.predict({k: v[rows] for k, v in columns.items()}, verbose=0),
        atol=1e-5,
    )


@pytest.mark.slow
def test_a_warm_start_into_a_model_with_adapted_layers_takes_the_trained_weights(tmp_path):
    from k2e_core.steps import job

    frame = real_data.penguin_notes()
    frame.to_csv(tmp_path / "penguins.csv", index=False)
    features = NOTES_FEATURES
    first = _spec(
        tmp_path / "first",
        "penguin_adapted_model",
        tmp_path / "penguins.csv",
        steps=300,
        labels="species",
        features=features,
        eval_files=tmp_path / "penguins.csv",
    )
    trained = job.run(first)
    second = dict(first, model_dir=str(tmp_path / "second"), warm_start=first["model_dir"])
    second["model"] = dict(first["model"], factory_kwargs={"seed": 9})  # other initial weights
    with job.open_job(second) as j:
        j.check_data()
        warm = j.trainer.estimator.evaluate(j.data.input_fn("eval"))  # before any training
    assert warm["loss"] == pytest.approx(trained["metrics"]["loss"], rel=1e-5)


# --------------------------------------------------------------------------- subclassed models


def test_a_subclassed_model_trains_evaluates_and_publishes_through_k2e_run(tmp_path, capsys):
    from k2e_core import cli
    from k2e_core.estimator import keras_copies
    from k2e_core.estimator.compat import tf

    frame = real_data.sklearn_frame("wine")
    frame.to_csv(tmp_path / "wine.csv", index=False)
    columns = [c for c in frame.columns if c != "target"]
    spec = _spec(
        tmp_path,
        "wine_subclassed_model",
        tmp_path / "wine.csv",
        steps=300,
        labels="target",
        features={"x": columns},
    )
    path = tmp_path / "job.json"
    path.write_text(json.dumps(spec))
    capsys.readouterr()
    assert cli.main(["run", str(path)]) == 0
    done = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert done["metrics"]["accuracy"] > 0.95

    from k2e_core.steps import job

    with job.open_job(spec) as j:
        trained = keras_copies.keras_model_at(
            j.model, tf.train.latest_checkpoint(spec["model_dir"])
        )
    trained.compile(
        optimizer=tf.keras.optimizers.legacy.SGD(),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    x, y = frame[columns].to_numpy(np.float32), frame["target"].to_numpy()
    loss, accuracy = trained.evaluate(x, y, verbose=0)
    assert done["metrics"]["loss"] == pytest.approx(loss, rel=1e-5)
    signature = tf.saved_model.load(done["export_path"]).signatures["serving_default"]
    np.testing.assert_allclose(
        list(signature(x=tf.constant(x[:10])).values())[0],
        trained.predict(x[:10], verbose=0),
        atol=1e-5,
    )


@pytest.mark.parametrize(
    "change,field",
    [
        (
            {"factory_kwargs": {"called": False}},
            "model.factory: the subclassed model WineNet was never called",
        ),
        (
            {"checkpoint_format": "saver"},
            "model.checkpoint_format: saver checkpoints name variables",
        ),
    ],
)
def test_subclassed_models_the_job_cannot_take_are_named(tmp_path, capsys, change, field):
    from k2e_core import cli

    frame = real_data.sklearn_frame("wine")
    frame.to_csv(tmp_path / "wine.csv", index=False)
    spec = _spec(
        tmp_path,
        "wine_subclassed_model",
        tmp_path / "wine.csv",
        labels="target",
        features={"x": [c for c in frame.columns if c != "target"]},
    )
    spec["model"].update(change)
    path = tmp_path / "job.json"
    path.write_text(json.dumps(spec))
    assert cli.main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and field in err[0]


def test_infinities_as_pandas_writes_them_are_missing_values(tmp_path):
    """pandas writes inf as `inf`, which TensorFlow parses as a number: it trained silently.
    It is refused by default, and `missing: drop` trains as Keras does on the finite rows."""
    from k2e_core.errors import SpecError
    from k2e_core.steps import job

    frame = real_data.penguins()[["species", *PENGUIN_MEASUREMENTS]].dropna()
    frame.loc[frame.index[[5, 40]], "body_mass_g"] = [np.inf, -np.inf]
    frame.to_csv(tmp_path / "penguins.csv", index=False)
    spec = _spec(
        tmp_path,
        "penguin_model",
        tmp_path / "penguins.csv",
        features={"measurements": PENGUIN_MEASUREMENTS},
        labels="species",
        batch_size=512,
    )
    with pytest.raises(
        SpecError,
        match=r"penguins.csv line 7 column 'body_mass_g' is 'inf', not a "
        r"finite number; set data.missing: drop",
    ):
        job.validate(spec)

    result = job.run(dict(spec, data=dict(spec["data"], missing="drop")))
    assert np.isfinite(result["metrics"]["loss"])
    _assert_evaluates_as_keras(spec, result, frame[np.isfinite(frame["body_mass_g"])])


def test_a_multi_output_model_reports_each_outputs_loss_as_keras_evaluate_does(
    example_data, tmp_path
):
    """Keras' evaluate reports `<output>_loss` for every head beside the total loss; so does
    the job's evaluation, with the same values on the same rows."""
    from k2e_core.steps import job
    from tests.conftest import EXAMPLES

    spec = {
        "model": {"factory": os.path.join(EXAMPLES, "models.py") + ":two_input_two_output_model"},
        "model_dir": str(tmp_path / "model"),
        "data": {
            "train": {"files": str(example_data / "two_io_train.npz")},
            "eval": {"files": str(example_data / "two_io_test.npz")},
            "batch_size": 32,
        },
        "train": {"steps": 30},
    }
    job.train_step(spec)
    metrics = job.evaluate_step(spec)["metrics"]
    with np.load(example_data / "two_io_test.npz") as arrays:
        arrays = dict(arrays)
    keras = _trained_keras(spec)
    keras.compile(loss=keras.loss, metrics={"dense_2": "accuracy", "dense_3": "accuracy"})
    expected = keras.evaluate(
        {"input_a": arrays["input_a"], "input_b": arrays["input_b"]},
        {"dense_2": arrays["dense_2"], "dense_3": arrays["dense_3"]},
        batch_size=32,
        verbose=0,
        return_dict=True,
    )
    for name in ("loss", "dense_2_loss", "dense_3_loss"):
        assert metrics[name] == pytest.approx(expected[name], rel=1e-4), name


def test_training_counts_the_rows_it_dropped_for_missing_values(tmp_path, caplog):
    """missing: drop over the whole of training, not only the checked part: penguins has
    two rows without measurements; 100 steps of 32 rows read the file about 9.3 times."""
    from k2e_core.steps import job

    spec = _spec(
        tmp_path,
        "penguin_model",
        real_data.penguins_csv(),
        steps=100,
        missing="drop",
        features={"measurements": PENGUIN_MEASUREMENTS},
        labels="species",
    )
    frame = real_data.penguins()[["species", *PENGUIN_MEASUREMENTS]]
    per_epoch = int(frame.isna().any(axis=1).sum())
    with caplog.at_level("INFO", logger="k2e"):
        result = job.train_step(spec)
    epochs = 100 * 32 / len(frame)
    # at least the rows of the batches trained on; at most those and the batches read ahead
    assert per_epoch * int(epochs) <= result["rows_dropped"] <= per_epoch * (int(epochs) + 2)
    assert f"training dropped {result['rows_dropped']} rows with missing values" in caplog.text
