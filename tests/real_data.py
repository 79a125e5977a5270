"""Public datasets that ship inside packages (scikit-learn, palmerpenguins), written to files
the way pandas and TFRecord writers write them, and the Keras models people write for them.

Factories are named by job specs as `<this file>:<function>`.
"""

from __future__ import annotations

import importlib.resources
import os

import numpy as np

HERE = os.path.abspath(__file__)


def factory(name: str) -> str:
    return f"{HERE}:{name}"


def penguins_csv() -> str:
    """palmerpenguins' penguins.csv as shipped: species as text first, `NA` cells."""
    return str(importlib.resources.files("palmerpenguins") / "data" / "penguins.csv")


def penguins():
    import pandas as pd

    return pd.read_csv(penguins_csv())


def sklearn_frame(name: str):
    """A scikit-learn dataset as a DataFrame with its `target` column first (as a frame that
    had the label inserted first writes it)."""
    import sklearn.datasets

    frame = getattr(sklearn.datasets, f"load_{name}")(as_frame=True).frame
    return frame[["target", *[c for c in frame.columns if c != "target"]]]


PENGUIN_MEASUREMENTS = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]


# --------------------------------------------------------------------------- models


def _tf():
    import tensorflow as tf

    return tf


def adam(learning_rate: float):
    """Keras 2's legacy Adam (TF 2.15), Keras 3's Adam (TF 2.21): one factory for both."""
    tf = _tf()
    keras2 = not getattr(tf.keras, "__version__", "2").startswith("3")  # 2.15 has none
    return (tf.keras.optimizers.legacy if keras2 else tf.keras.optimizers).Adam(learning_rate)


def _compiled(inputs, output, learning_rate: float, loss="sparse_categorical_crossentropy"):
    tf = _tf()
    model = tf.keras.Model(inputs, output)
    model.compile(
        optimizer=adam(learning_rate),
        loss=loss,
        metrics=["accuracy"],
    )
    return model


def dense_classifier(
    inputs: int,
    classes: int,
    mean=None,
    variance=None,
    seed: int = 1,
    loss: str = "sparse_categorical_crossentropy",
    name: str = "x",
    output: str = "label",
):
    """Normalization -> Dense(16) -> softmax: what most tabular Keras models look like."""
    tf = _tf()
    tf.keras.utils.set_random_seed(seed)
    x_in = tf.keras.Input(shape=(inputs,), name=name)
    x = tf.keras.layers.Normalization(mean=mean, variance=variance)(x_in) if mean else x_in
    x = tf.keras.layers.Dense(16, activation="relu")(x)
    if classes == 1:
        out = tf.keras.layers.Dense(1, activation="sigmoid", name=output)(x)
    else:
        out = tf.keras.layers.Dense(classes, activation="softmax", name=output)(x)
    return _compiled(x_in, out, 0.01, loss)


def wine_model(seed: int = 1):
    frame = sklearn_frame("wine").drop(columns="target")
    return dense_classifier(13, 3, frame.mean().tolist(), frame.var().tolist(), seed)


def cancer_model(seed: int = 1):
    frame = sklearn_frame("breast_cancer").drop(columns="target")
    return dense_classifier(
        30, 1, frame.mean().tolist(), frame.var().tolist(), seed, loss="binary_crossentropy"
    )


def penguin_model(seed: int = 1, loss: str = "sparse_categorical_crossentropy"):
    frame = penguins()[PENGUIN_MEASUREMENTS]
    return dense_classifier(
        4,
        3,
        frame.mean().tolist(),
        frame.var().tolist(),
        seed,
        loss=loss,
        name="measurements",
        output="species",
    )


def penguin_mixed_model(seed: int = 1):
    """Text, integer-categorical and numeric inputs: StringLookup / IntegerLookup with their
    vocabularies, one-hot, concatenated with the normalised measurements."""
    tf = _tf()
    tf.keras.utils.set_random_seed(seed)
    frame = penguins()
    island = tf.keras.Input(shape=(1,), dtype=tf.string, name="island")
    sex = tf.keras.Input(shape=(1,), dtype=tf.string, name="sex")
    year = tf.keras.Input(shape=(1,), dtype=tf.int64, name="year")
    measurements = tf.keras.Input(shape=(4,), name="measurements")

    def one_hot(lookup, tokens):
        return tf.keras.layers.CategoryEncoding(tokens, output_mode="one_hot")(lookup)

    parts = [
        one_hot(
            tf.keras.layers.StringLookup(vocabulary=["Biscoe", "Dream", "Torgersen"])(island), 4
        ),
        one_hot(tf.keras.layers.StringLookup(vocabulary=["female", "male"])(sex), 3),
        one_hot(tf.keras.layers.IntegerLookup(vocabulary=[2007, 2008, 2009])(year), 4),
        tf.keras.layers.Normalization(
            mean=frame[PENGUIN_MEASUREMENTS].mean().tolist(),
            variance=frame[PENGUIN_MEASUREMENTS].var().tolist(),
        )(measurements),
    ]
    x = tf.keras.layers.Concatenate()(parts)
    x = tf.keras.layers.Dense(16, activation="relu")(x)
    return _compiled(
        [island, sex, year, measurements],
        tf.keras.layers.Dense(3, activation="softmax", name="species")(x),
        0.01,
    )


def penguin_notes():
    """Penguins with a free-text column, as a survey export has one: "Biscoe island, male, 2007"."""
    frame = penguins().dropna()
    notes = frame.island + " island, " + frame.sex + ", " + frame.year.astype(str)
    return frame.assign(notes=notes)[
        ["species", "notes", "island", "sex", "year", *PENGUIN_MEASUREMENTS]
    ]


def penguin_adapted_model(seed: int = 1):
    """Every input through a preprocessing layer adapted on the data, as tabular and text
    models are written today: StringLookup, IntegerLookup, TextVectorization (tf-idf),
    Normalization, Discretization, Hashing."""
    tf = _tf()
    tf.keras.utils.set_random_seed(seed)
    frame = penguin_notes()
    inputs = {
        "island": tf.keras.Input(shape=(1,), dtype=tf.string, name="island"),
        "sex": tf.keras.Input(shape=(1,), dtype=tf.string, name="sex"),
        "year": tf.keras.Input(shape=(1,), dtype=tf.int64, name="year"),
        "notes": tf.keras.Input(shape=(1,), dtype=tf.string, name="notes"),
        "measurements": tf.keras.Input(shape=(3,), name="measurements"),
        "body_mass_g": tf.keras.Input(shape=(1,), name="body_mass_g"),
    }

    def adapted(layer, values):
        layer.adapt(values)
        return layer

    measurements = frame[PENGUIN_MEASUREMENTS[:3]].to_numpy(np.float32)
    parts = [
        adapted(tf.keras.layers.StringLookup(output_mode="one_hot"), frame.island)(
            inputs["island"]
        ),
        tf.keras.layers.Hashing(4, output_mode="one_hot")(inputs["sex"]),
        adapted(tf.keras.layers.IntegerLookup(output_mode="one_hot"), frame.year)(inputs["year"]),
        # Keras 3 keeps the input's (1,) in the tf-idf rows: flattened, as Keras 2 gives them
        tf.keras.layers.Flatten()(
            adapted(tf.keras.layers.TextVectorization(output_mode="tf_idf"), frame.notes)(
                inputs["notes"]
            )
        ),
        adapted(tf.keras.layers.Normalization(), measurements)(inputs["measurements"]),
        tf.keras.layers.CategoryEncoding(5, output_mode="one_hot")(
            adapted(
                tf.keras.layers.Discretization(num_bins=5),
                frame[["body_mass_g"]].to_numpy(np.float32),
            )(inputs["body_mass_g"])
        ),
    ]
    x = tf.keras.layers.Concatenate()(parts)  # every part is float32 already
    x = tf.keras.layers.Dense(16, activation="relu")(x)
    return _compiled(
        inputs, tf.keras.layers.Dense(3, activation="softmax", name="species")(x), 0.01
    )


def wine_subclassed_model(seed: int = 1, called: bool = True):
    """A `tf.keras.Model` subclass, called once on a batch as its author tried it out."""
    tf = _tf()
    tf.keras.utils.set_random_seed(seed)

    class WineNet(tf.keras.Model):
        def __init__(self, units=16, **kwargs):
            super().__init__(**kwargs)
            self.units = units
            self.normalize = tf.keras.layers.Normalization(
                mean=frame.mean().tolist(), variance=frame.var().tolist()
            )
            self.hidden = tf.keras.layers.Dense(units, activation="relu")
            self.classes = tf.keras.layers.Dense(3, activation="softmax")

        def call(self, inputs):
            return self.classes(self.hidden(self.normalize(inputs)))

        def get_config(self):
            return {"units": self.units}

    frame = sklearn_frame("wine").drop(columns="target")
    model = WineNet()
    if called:
        model(frame.to_numpy(np.float32)[:2])
    model.compile(
        tf.keras.optimizers.legacy.Adam(0.01), "sparse_categorical_crossentropy", ["accuracy"]
    )
    return model


def zip_model(seed: int = 1):
    """A zip code as text (its leading zero matters), hashed into buckets."""
    tf = _tf()
    tf.keras.utils.set_random_seed(seed)
    zip_code = tf.keras.Input(shape=(1,), dtype=tf.string, name="zip_code")
    x = tf.keras.layers.Hashing(num_bins=64, output_mode="one_hot")(zip_code)
    return _compiled(
        zip_code,
        tf.keras.layers.Dense(1, activation="sigmoid", name="bought")(x),
        0.05,
        "binary_crossentropy",
    )


def digits_model(size: int = 8, seed: int = 1):
    """scikit-learn's 8x8 digits as images: Rescaling -> Conv2D -> Dense."""
    tf = _tf()
    tf.keras.utils.set_random_seed(seed)
    image = tf.keras.Input(shape=(size, size, 1), name="image")
    x = tf.keras.layers.Rescaling(1 / 255)(image)
    x = tf.keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = tf.keras.layers.Flatten()(x)
    return _compiled(image, tf.keras.layers.Dense(10, activation="softmax", name="digit")(x), 0.01)


def ink_model(width=None, ragged: bool = False, seed: int = 1):
    """Which of the 64 pixels of a digit hold ink, as a variable-length list of pixel ids:
    Embedding -> mean -> softmax (padding id 0 is masked; a ragged input has none)."""
    tf = _tf()
    tf.keras.utils.set_random_seed(seed)
    pixels = tf.keras.Input(shape=(width,), dtype=tf.int64, name="pixels", ragged=ragged)
    x = tf.keras.layers.Embedding(65, 16, mask_zero=not ragged)(pixels)
    if ragged:
        x = tf.keras.layers.Lambda(lambda t: tf.reduce_mean(t, axis=1))(x)
    else:
        x = tf.keras.layers.GlobalAveragePooling1D()(x)
    return _compiled(pixels, tf.keras.layers.Dense(10, activation="softmax", name="digit")(x), 0.02)


# --------------------------------------------------------------------------- files


def write_digits_tfrecord(path: str, rows=None, size: int = 8) -> tuple:
    """Digits as PNG bytes (pixel values 0-255) in `image`, the class in `digit`, and the
    ids (1-64) of inked pixels as a variable-length `pixels` list. Returns (images, labels)."""
    import sklearn.datasets

    tf = _tf()

    digits = sklearn.datasets.load_digits()
    images = (digits.images[:rows] * 255 / 16).astype(np.uint8)[..., None]
    labels = digits.target[:rows]
    with tf.io.TFRecordWriter(path) as writer:
        for image, label in zip(images, labels):
            png = tf.io.encode_png(image).numpy()
            ink = (np.flatnonzero(image.reshape(-1) > 64) + 1).tolist()
            feature = {
                "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[png])),
                "digit": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
                "pixels": tf.train.Feature(int64_list=tf.train.Int64List(value=ink)),
            }
            writer.write(
                tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
            )
    return images, labels


def write_digits_parquet(path: str, rows=None, row_group_size: int = 500) -> None:
    """The digits of `write_digits_tfrecord` as pyarrow writes them: `pixels` a list<int64>
    column of inked pixel ids, `digit` an int64 column, several row groups."""
    import pyarrow
    import pyarrow.parquet
    import sklearn.datasets

    digits = sklearn.datasets.load_digits()
    images = (digits.images[:rows] * 255 / 16).astype(np.uint8)
    table = pyarrow.table(
        {
            "pixels": [(np.flatnonzero(i.reshape(-1) > 64) + 1).tolist() for i in images],
            "digit": digits.target[:rows].astype(np.int64),
        }
    )
    pyarrow.parquet.write_table(table, path, row_group_size=row_group_size)


def write_frame_tfrecord(frame, path: str) -> None:
    """A DataFrame as tf.train.Examples: text as bytes_list, ints as int64_list, floats as
    float_list, one value each (as a TFRecord writer of tabular data does)."""
    tf = _tf()
    with tf.io.TFRecordWriter(path) as writer:
        for row in frame.itertuples(index=False):
            feature = {}
            for name, value in zip(frame.columns, row):
                if isinstance(value, str):
                    feature[name] = tf.train.Feature(
                        bytes_list=tf.train.BytesList(value=[value.encode()])
                    )
                elif isinstance(value, (int, np.integer)):
                    feature[name] = tf.train.Feature(
                        int64_list=tf.train.Int64List(value=[int(value)])
                    )
                else:
                    feature[name] = tf.train.Feature(
                        float_list=tf.train.FloatList(value=[float(value)])
                    )
            writer.write(
                tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
            )


def write_frame_npz(frame, path: str) -> None:
    """A DataFrame as .npz: text columns as str arrays."""
    arrays = {}
    for name in frame.columns:
        column = frame[name]
        arrays[name] = (
            column.to_numpy(dtype=str)
            if column.dtype == object or str(column.dtype) in ("string", "str")
            else column.to_numpy()
        )
    np.savez(path, **arrays)
