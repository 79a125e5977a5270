"""Writes the examples' small synthetic data sets (deterministic) into a directory.

    python examples/generate_data.py [OUT_DIR]      (default: examples/data)

`OUT_DIR/retraining/` holds three days of iris data for scheduled retraining: day 1 and
day 2 are clean, day 3 is drifted (measurements shifted, most labels wrong, as after an
upstream labelling bug), and one held-out evaluation set for all three.
"""

from __future__ import annotations

import csv
import os
import sys

import numpy as np

IRIS_COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width", "species"]
# Per-species means and standard deviations of Fisher's iris measurements.
IRIS_MEANS = np.array(
    [[5.01, 3.43, 1.46, 0.25], [5.94, 2.77, 4.26, 1.33], [6.59, 2.97, 5.55, 2.03]]
)
IRIS_STDS = np.array([[0.35, 0.38, 0.17, 0.11], [0.52, 0.31, 0.47, 0.20], [0.64, 0.32, 0.55, 0.27]])


def iris(rows: int, seed: int, shift: float = 0.0, mislabeled: float = 0.0):
    rng = np.random.default_rng(seed)
    species = rng.integers(0, 3, rows)
    x = rng.normal(IRIS_MEANS[species] + shift, IRIS_STDS[species]).clip(0.1).round(1)
    wrong = rng.random(rows) < mislabeled
    species = np.where(wrong, (species + rng.integers(1, 3, rows)) % 3, species)
    return x.astype(np.float32), species


def write_iris_csv(
    path: str, rows: int, seed: int, shift: float = 0.0, mislabeled: float = 0.0
) -> None:
    x, y = iris(rows, seed, shift, mislabeled)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(IRIS_COLUMNS)
        for features, label in zip(x, y):
            w.writerow([f"{v:.1f}" for v in features] + [int(label)])


PENGUIN_COLUMNS = [
    "species",
    "island",
    "bill_length_mm",
    "bill_depth_mm",
    "flipper_length_mm",
    "body_mass_g",
    "sex",
    "year",
]
PENGUIN_SPECIES = ["Adelie", "Chinstrap", "Gentoo"]
PENGUIN_ISLANDS = ["Biscoe", "Dream", "Torgersen"]
# Per-species means and standard deviations of the Palmer penguins' measurements
# (bill length, bill depth, flipper length, body mass), and where each species lives.
PENGUIN_MEANS = np.array(
    [[38.8, 18.3, 190.0, 3700.0], [48.8, 18.4, 195.8, 3733.0], [47.5, 15.0, 217.2, 5076.0]]
)
PENGUIN_STDS = np.array([[2.7, 1.2, 6.5, 459.0], [3.3, 1.1, 7.1, 384.0], [3.1, 1.0, 6.5, 504.0]])
PENGUIN_HOMES = np.array([[0.29, 0.37, 0.34], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


def write_penguins_csv(path: str, rows: int, seed: int, missing: float = 0.03) -> None:
    """Penguins as palmerpenguins' CSV holds them: species, island and sex as text, the
    year as an integer, and `NA` in a few measurement and sex cells."""
    rng = np.random.default_rng(seed)
    species = rng.integers(0, 3, rows)
    x = rng.normal(PENGUIN_MEANS[species], PENGUIN_STDS[species])
    islands = [rng.choice(3, p=PENGUIN_HOMES[s]) for s in species]
    sexes = rng.choice(["female", "male"], rows)
    years = rng.integers(2007, 2010, rows)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(PENGUIN_COLUMNS)
        for i in range(rows):
            measured = [f"{v:.1f}" for v in x[i, :3]] + [str(int(round(x[i, 3], -1)))]
            measured = [v if rng.random() >= missing else "NA" for v in measured]
            sex = sexes[i] if rng.random() >= missing else "NA"
            island = PENGUIN_ISLANDS[islands[i]]
            w.writerow([PENGUIN_SPECIES[species[i]], island, *measured, sex, years[i]])


def bag_of_words(rows: int, seed: int, vocab: int = 1000, labels: int = 20):
    """Multi-hot posts whose words depend on their tag, and one-hot tags (as float32)."""
    profiles = np.random.default_rng(7).dirichlet(np.full(vocab, 0.05), labels)
    rng = np.random.default_rng(seed)
    tags = rng.integers(0, labels, rows)
    x = np.zeros((rows, vocab), np.float32)
    for i, tag in enumerate(tags):
        words = rng.choice(vocab, size=30, p=profiles[tag])
        x[i, words] = 1.0
    return x, np.eye(labels, dtype=np.float32)[tags]


def write_bag_of_words_tfrecord(path: str, rows: int, seed: int) -> None:
    import tensorflow as tf

    x, y = bag_of_words(rows, seed)
    with tf.io.TFRecordWriter(path) as w:
        for features, label in zip(x, y):
            example = tf.train.Example(
                features=tf.train.Features(
                    feature={
                        "posts_input": tf.train.Feature(
                            float_list=tf.train.FloatList(value=features)
                        ),
                        "labels": tf.train.Feature(float_list=tf.train.FloatList(value=label)),
                    }
                )
            )
            w.write(example.SerializeToString())


def two_io(rows: int, seed: int):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(rows, 16)).astype(np.float32)
    b = rng.normal(size=(rows, 16)).astype(np.float32)
    y2 = (a[:, :3] + b[:, :3]).argmax(1)
    y3 = (a[:, 3] - b[:, 3] > 0).astype(int)
    return {
        "input_a": a,
        "input_b": b,
        "dense_2": np.eye(3, dtype=np.float32)[y2],
        "dense_3": np.eye(2, dtype=np.float32)[y3],
    }


def main(out_dir: str = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")) -> None:
    os.makedirs(out_dir, exist_ok=True)
    write_iris_csv(os.path.join(out_dir, "iris_train.csv"), 120, seed=1)
    write_iris_csv(os.path.join(out_dir, "iris_test.csv"), 30, seed=2)
    write_penguins_csv(os.path.join(out_dir, "penguins_train.csv"), 300, seed=1)
    write_penguins_csv(os.path.join(out_dir, "penguins_test.csv"), 100, seed=2)
    write_bag_of_words_tfrecord(os.path.join(out_dir, "bow_train.tfrecord"), 2000, seed=1)
    write_bag_of_words_tfrecord(os.path.join(out_dir, "bow_test.tfrecord"), 400, seed=2)
    np.savez(os.path.join(out_dir, "two_io_train.npz"), **two_io(1000, seed=1))
    np.savez(os.path.join(out_dir, "two_io_test.npz"), **two_io(200, seed=2))
    retraining = os.path.join(out_dir, "retraining")
    os.makedirs(retraining, exist_ok=True)
    write_iris_csv(os.path.join(retraining, "day1.csv"), 300, seed=11)
    write_iris_csv(os.path.join(retraining, "day2.csv"), 300, seed=12)
    write_iris_csv(os.path.join(retraining, "day3.csv"), 300, seed=13, shift=0.5, mislabeled=0.7)
    write_iris_csv(os.path.join(retraining, "eval.csv"), 150, seed=14)
    print(f"example data written to {out_dir}", file=sys.stderr)


if __name__ == "__main__":
    main(*sys.argv[1:])
