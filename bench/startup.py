"""Start-up costs: what Airflow pays to import k2e's provider and parse dags/, what `k2e --help`
costs, and conversion alone (against upstream `model_to_estimator`).

    .venv/bin/python bench/startup.py [--reps 5] [--quick]

Imports and parsing are timed in fresh interpreters after `import airflow.sdk` (which every
DAG file and operator module pays anyway), and must not import TensorFlow. `k2e --help` is
the wall time of the command. Conversion is timed in one process per model, after
TensorFlow is imported and the model built.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import (  # noqa: E402
    BIN,
    REPO,
    finish,
    fmt_spread,
    met_cell,
    part_parser,
    ratios,
    row,
    spread,
)

PART = "startup"
_IMPORT = """
import sys, time
import airflow.sdk
began = time.perf_counter()
import airflow_plugin, airflow_plugin.get_provider_info, airflow_plugin.hooks.storage
import airflow_plugin.operators.k2e
seconds = time.perf_counter() - began
print(seconds, "tensorflow" in sys.modules)
"""
_PARSE = """
import sys, time
import airflow.sdk
from airflow.dag_processing.dagbag import DagBag
began = time.perf_counter()
bag = DagBag(dag_folder={dags!r})
seconds = time.perf_counter() - began
assert not bag.import_errors, bag.import_errors
print(seconds, "tensorflow" in sys.modules)
"""
_CONVERT = """
import json, os, sys, tempfile, time
sys.path.insert(0, os.path.join({repo!r}, "examples"))
from k2e_core.estimator.compat import tf
import models
from k2e_core.estimator import conversion


class Subclassed(tf.keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = tf.keras.layers.Dense(64, activation="relu")
        self.out = tf.keras.layers.Dense(3, activation="softmax")

    def call(self, inputs):
        return self.out(self.hidden(inputs))

    def get_config(self):
        return {{}}


def subclassed_model():
    model = Subclassed()
    model(tf.zeros([1, 4]))
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    return model


def preprocessing_model():  # what upstream can convert (it fails later, at training)
    words = [f"w{{i}}" for i in range(2000)]
    text = tf.keras.Input((1,), dtype=tf.string, name="word")
    year = tf.keras.Input((1,), dtype=tf.int64, name="year")
    size = tf.keras.Input((2,), name="size")
    lookup = tf.keras.layers.StringLookup(output_mode="one_hot")
    lookup.adapt(words)
    years = tf.keras.layers.IntegerLookup(output_mode="one_hot")
    years.adapt(list(range(1990, 2030)))
    norm = tf.keras.layers.Normalization()
    norm.adapt([[float(i), float(i % 7)] for i in range(1000)])
    bins = tf.keras.layers.Discretization(num_bins=8)
    bins.adapt([[float(i)] for i in range(1000)])
    x = tf.keras.layers.Concatenate()([
        lookup(text), years(year), norm(size),
        tf.keras.layers.CategoryEncoding(8, output_mode="one_hot")(bins(size[:, :1]))])
    x = tf.keras.layers.Dense(32, activation="relu")(x)
    model = tf.keras.Model([text, year, size], tf.keras.layers.Dense(3, activation="softmax")(x))
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    return model


factory = getattr(models, sys.argv[1], None) or globals()[sys.argv[1]]
checkpoint_format = sys.argv[3]
out = {{"k2e": [], "upstream": []}}
for rep in range(int(sys.argv[2])):
    for side in ("k2e", "upstream") if rep % 2 == 0 else ("upstream", "k2e"):
        model = factory()
        convert = conversion.convert if side == "k2e" else tf.keras.estimator.model_to_estimator
        began = time.perf_counter()
        convert(keras_model=model, model_dir=tempfile.mkdtemp(),
                checkpoint_format=checkpoint_format)
        out[side].append(time.perf_counter() - began)
        tf.keras.backend.clear_session()
print(json.dumps(out))
"""
# name: (factory in examples/models.py or above, checkpoint format; subclassed models need saver)
MODELS = {
    "iris": ("iris_model", "checkpoint"),
    "bag_of_words": ("bag_of_words_model", "checkpoint"),
    "two_io": ("two_input_two_output_model", "checkpoint"),
    "subclassed": ("subclassed_model", "saver"),
    "preprocessing (adapted StringLookup of 2,000 words, IntegerLookup, Normalization, "
    "Discretization)": (
        "preprocessing_model",
        "checkpoint",
    ),
}


def _python(code: str, *args) -> str:
    env = {
        **os.environ,
        "PYTHONWARNINGS": "ignore",
        "AIRFLOW_HOME": os.environ.get("AIRFLOW_HOME") or tempfile.mkdtemp(prefix="k2e-bench-af-"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=REPO,
    )
    if proc.returncode != 0:
        raise SystemExit(f"bench startup failed:\n{proc.stderr[-3000:]}")
    return proc.stdout.strip().splitlines()[-1]


def _timed_lines(code: str, reps: int) -> tuple[list, bool]:
    seconds, tensorflow = [], False
    for _ in range(reps):
        value, imported = _python(code).split()
        seconds.append(float(value) * 1000)
        tensorflow |= imported == "True"
    return seconds, tensorflow


def measure(reps: int) -> list:
    rows = []
    ms, tf_imported = _timed_lines(_IMPORT, reps)
    s = spread(ms, 1)
    rows.append(
        row(
            PART,
            "import airflow_plugin and its operators (after airflow.sdk)",
            s,
            "ms",
            target="< 150 ms, no TensorFlow",
            tensorflow=tf_imported,
            met=s["median"] < 150 and not tf_imported,
        )
    )
    ms, tf_imported = _timed_lines(_PARSE.format(dags=os.path.join(REPO, "dags")), reps)
    s = spread(ms, 1)
    rows.append(
        row(
            PART,
            f"parse dags/ ({len(_dag_files())} files, after airflow.sdk)",
            s,
            "ms",
            target="< 150 ms, no TensorFlow",
            tensorflow=tf_imported,
            met=s["median"] < 150 and not tf_imported,
        )
    )
    helps = []
    for _ in range(reps):
        began = time.perf_counter()
        subprocess.run(
            [os.path.join(BIN, "k2e"), "--help"], check=True, capture_output=True, timeout=60
        )
        helps.append(time.perf_counter() - began)
    s = spread(helps)
    rows.append(row(PART, "k2e --help", s, "s", target="< 0.5 s", met=s["median"] < 0.5))
    for name, (factory, checkpoint_format) in MODELS.items():
        out = json.loads(_python(_CONVERT.format(repo=REPO), factory, str(reps), checkpoint_format))
        rows.append(
            row(
                PART,
                f"conversion alone: {name}",
                spread(out["k2e"]),
                "s",
                baseline=spread(out["upstream"]),
                baseline_name="upstream model_to_estimator",
                ratio=spread(ratios(out["k2e"], out["upstream"]), 2),
            )
        )
    return rows


def _dag_files() -> list:
    return [f for f in os.listdir(os.path.join(REPO, "dags")) if f.endswith(".py")]


def table(rows) -> list:
    lines = ["| measure | k2e | baseline | ratio | target | met |", "|---|---|---|---|---|---|"]
    for r in rows:
        unit = " " + r["unit"]
        baseline = (
            f"{fmt_spread(r['baseline'], None, unit)} ({r['baseline_name']})"
            if r.get("baseline")
            else ""
        )
        ratio = fmt_spread(r["ratio"], 2, "x") if r.get("ratio") else ""
        lines.append(
            f"| {r['measure']} | {fmt_spread(r['value'], None, unit)} | {baseline} "
            f"| {ratio} | {r['target'] or ''} | {met_cell(r)} |"
        )
    return lines


def main(argv=None):
    args = part_parser(__doc__, reps=5, quick="one rep").parse_args(argv)
    return finish(measure(1 if args.quick else args.reps), table, args.json)


if __name__ == "__main__":
    main()
