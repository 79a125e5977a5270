"""In a cluster every training task reads its own share of the data: by file when there are
enough files, by record otherwise, each shuffled with a seed of its own."""

from __future__ import annotations

import glob
import os

import pytest

from tests.cluster.test_local_cluster import _k2e, _write

SEEN_DIR = "K2E_TEST_SEEN_DIR"

# A model that writes down the id of every example it trains on, per task.
RECORDING_MODEL = """
import json, os
import tensorflow as tf


class Record(tf.keras.layers.Layer):
    def call(self, ids):
        if tf.executing_eagerly():  # k2e's own checks before training: not training steps
            return tf.zeros([], tf.float32)

        def write(values):
            task = json.loads(os.environ["TF_CONFIG"])["task"]
            seen = os.environ["K2E_TEST_SEEN_DIR"]
            path = os.path.join(seen, f"{task['type']}{task['index']}.txt")
            with open(path, "a") as f:
                f.write("".join(f"{int(v)}\\n" for v in values.numpy().reshape(-1)))
            return values
        recorded = tf.py_function(write, [ids], tf.int64)
        return tf.cast(tf.reduce_sum(recorded) * 0, tf.float32)


def model():
    tf.keras.utils.set_random_seed(1)
    ids = tf.keras.Input(shape=(1,), dtype=tf.int64, name="id")
    x = tf.keras.Input(shape=(1,), name="x")
    out = tf.keras.layers.Dense(1, name="y")(x) + Record()(ids)
    m = tf.keras.Model([ids, x], out)
    m.compile(optimizer=tf.keras.optimizers.legacy.SGD(0.01), loss="mse")
    return m
"""


@pytest.mark.slow
@pytest.mark.parametrize("files", [1, 4])
def test_workers_read_disjoint_shares_that_cover_the_training_set(tmp_path, files, monkeypatch):
    rows = 64
    (tmp_path / "model.py").write_text(RECORDING_MODEL)
    for f in range(files):
        lines = ["id,x,y"] + [f"{i},{i / rows},{2 * i / rows}" for i in range(f, rows, files)]
        (tmp_path / f"part-{f}.csv").write_text("\n".join(lines) + "\n")
    seen = tmp_path / "seen"
    seen.mkdir()
    monkeypatch.setenv(SEEN_DIR, str(seen))
    spec = {
        "model": {"factory": str(tmp_path / "model.py") + ":model"},
        "model_dir": str(tmp_path / "model_dir"),
        "data": {"train": {"files": str(tmp_path / "part-*.csv")}, "labels": "y", "batch_size": 4},
        "train": {"steps": 600},
        "run_config": {"tf_random_seed": 7, "log_every_secs": 1},
    }
    proc, result = _k2e("train", _write(tmp_path, spec), "--cluster", "workers=1,ps=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    shares = {}
    for path in sorted(glob.glob(str(seen / "*.txt"))):
        ids = [int(v) for v in open(path).read().split()]
        shares[os.path.basename(path)[:-4]] = ids
    assert set(shares) == {"chief0", "worker0"}
    share = rows // 2
    epochs = {task: ids[:share] for task, ids in shares.items()}
    for task, first in epochs.items():
        assert len(first) == share, f"{task} trained on fewer than one epoch of its share"
        assert len(set(first)) == share, f"{task} saw an example twice within an epoch"
    assert set(epochs["chief0"]).isdisjoint(epochs["worker0"])
    assert set(epochs["chief0"]) | set(epochs["worker0"]) == set(range(rows))
    # the same share every epoch, in another order (each task shuffles with its own seed)
    assert set(shares["chief0"][share : 2 * share]) == set(epochs["chief0"])
    assert shares["chief0"][share : 2 * share] != epochs["chief0"]
