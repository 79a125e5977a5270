"""Training throughput: a k2e job against Keras `fit` of the same compiled model.

    .venv/bin/python bench/throughput.py [--reps 3] [--quick] [--models iris,...]

For each model (iris, bag of words, two-input two-output), data format (CSV, TFRecord) and
batch size (32, 256): the same model from the examples' factory, the same input files read
through the same k2e input pipeline (no cache: every epoch reads the files), the same number
of steps, after a warm-up. Measured side by side in each repetition, in turns:
  * Keras `model.fit` (baseline): a 50-step fit first, then the timed fit;
  * k2e: the job's conversion and training path, steady-state rate after the first step;
  * upstream `tf.keras.estimator.model_to_estimator` with its default RunConfig, the same
    input_fn and the same timing hook, for reference.
Reported in examples/s: medians, k2e / Keras per repetition (median, min-max).

What TensorBoard costs, the same job three ways in turns: no curves and one evaluation at
the end (`run_config.save_summary_steps: 0`, `eval.every_steps: end`); the default train
curves (a point every 100 steps); the defaults (curves and five evaluations during
training, a checkpoint at each). The curves' cost is the training rate's; the evaluations'
is the train step's wall time (each evaluation builds its graph and reads a checkpoint).
"""

from __future__ import annotations

import csv
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import (  # noqa: E402
    REPO,
    finish,
    fmt,
    fmt_spread,
    met_cell,
    part_parser,
    ratios,
    row,
    spread,
)

PART = "throughput"
BATCHES = (32, 256)
FORMATS = ("csv", "tfrecord")
#: model -> (example spec, rows of training data, steps at batch 32, steps at batch 256):
#: about two seconds of Keras fit each on a 2-core machine.
MODELS = {
    "iris": ("iris.yaml", 1200, 4000, 2000),
    "bag_of_words": ("bag_of_words.yaml", 2000, 1200, 400),
    "two_io": ("two_io.yaml", 2000, 4000, 2000),
}
#: CSV rows of 1020 columns parse slowly: fewer steps for the bag of words from CSV.
CSV_STEPS_DIVISOR = {"bag_of_words": 4}
QUICK_STEPS = 30
WARMUP_STEPS = 50


# --------------------------------------------------------------------------- data


def _columns(model: str, rows: int) -> dict:
    """{column or input name: (rows, width) array}, as the example generator makes them."""
    sys.path.insert(0, os.path.join(REPO, "examples"))
    import generate_data
    import numpy as np

    if model == "iris":
        x, y = generate_data.iris(rows, seed=1)
        names = generate_data.IRIS_COLUMNS[:4]
        return {
            **{n: x[:, i : i + 1] for i, n in enumerate(names)},
            "species": y[:, None].astype(np.int64),
        }
    if model == "bag_of_words":
        x, y = generate_data.bag_of_words(rows, seed=1)
        return {"posts_input": x, "labels": y}
    return dict(generate_data.two_io(rows, seed=1))


def _expanded(name: str, array) -> list:
    return [name] if array.shape[1] == 1 else [f"{name}_{i}" for i in range(array.shape[1])]


def write_data(model: str, rows: int, fmt_: str, out_dir: str) -> tuple[str, dict]:
    """Writes the model's training data; returns (path, data.features/labels overrides)."""
    import numpy as np

    cols = _columns(model, rows)
    path = os.path.join(out_dir, f"{model}.{fmt_}")
    if fmt_ == "csv":
        header = [c for name, a in cols.items() for c in _expanded(name, a)]
        table = np.concatenate([a.astype(np.float64) for a in cols.values()], axis=1)
        ints = {i for i, c in enumerate(header) if c == "species"}
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            for r in table:
                w.writerow([int(v) if i in ints else f"{v:g}" for i, v in enumerate(r)])
    else:
        import tensorflow as tf

        with tf.io.TFRecordWriter(path) as w:
            for i in range(rows):
                feature = {}
                for name, a in cols.items():
                    if a.dtype.kind == "i":
                        feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=a[i]))
                    else:
                        feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=a[i]))
                w.write(
                    tf.train.Example(
                        features=tf.train.Features(feature=feature)
                    ).SerializeToString()
                )
    return path, _mapping(model, cols, fmt_)


def _mapping(model: str, cols: dict, fmt_: str) -> dict:
    def columns(name):
        return _expanded(name, cols[name]) if fmt_ == "csv" else [name]

    if model == "iris":
        return {
            "data.features": {"dense_input": [c for n in list(cols)[:4] for c in columns(n)]},
            "data.labels": "species",
        }
    if model == "bag_of_words":
        return {
            "data.features": {"posts_input": columns("posts_input")},
            "data.labels": columns("labels"),
        }
    return {
        "data.features": {"input_a": columns("input_a"), "input_b": columns("input_b")},
        "data.labels": {"dense_2": columns("dense_2"), "dense_3": columns("dense_3")},
    }


# --------------------------------------------------------------------------- one cell


def _spec(model, train_file, mapping, batch, steps, model_dir):
    from k2e_core.steps import job

    return job.load_spec(
        os.path.join(REPO, "examples", MODELS[model][0]),
        {
            "data.train.files": train_file,
            "data.eval": None,
            # like the baseline's fit without validation data: training alone (what the
            # evaluations during training cost is measured on its own, measure_curves)
            "eval.every_steps": "end",
            "data.cache": False,
            "data.batch_size": batch,
            "train.steps": steps,
            "model_dir": model_dir,
            "export": None,
            **mapping,
        },
    )


def k2e_rate(spec) -> float:
    from k2e_core.steps import job

    with job.open_job(spec) as j:
        j.check_data()
        return job._train(j)["steps_per_second"]


def keras_rate(spec, steps) -> float:
    from k2e_core.steps import job

    with job.open_job(spec) as j:
        model, ds = j.model, j.data.input_fn("train")()
        model.fit(ds, steps_per_epoch=WARMUP_STEPS, epochs=1, verbose=0)
        began = time.perf_counter()
        model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
        return steps / (time.perf_counter() - began)


def upstream_rate(spec, steps, model_dir) -> float:
    import tensorflow as tf

    from k2e_core.logs import progress_hook
    from k2e_core.steps import job

    with job.open_job(spec) as j:
        j.check_data()
        est = tf.keras.estimator.model_to_estimator(keras_model=j.model, model_dir=model_dir)
        hook = progress_hook(steps, every_secs=1e9)
        est.train(j.data.input_fn("train"), max_steps=steps, hooks=[hook])
        return hook.rate


def measure_cell(model, fmt_, batch, steps, reps, work) -> dict:
    import tensorflow as tf

    train_file, mapping = write_data(model, MODELS[model][1], fmt_, work)
    samples = {"keras": [], "k2e": [], "upstream": []}
    for rep in range(reps):
        order = ["keras", "k2e", "upstream"]
        for side in order if rep % 2 == 0 else order[::-1]:  # in turns: no side always first
            model_dir = tempfile.mkdtemp(dir=work)
            spec = _spec(model, train_file, mapping, batch, steps, model_dir)
            if side == "keras":
                rate = keras_rate(spec, steps)
            elif side == "k2e":
                rate = k2e_rate(spec)
            else:
                rate = upstream_rate(spec, steps, os.path.join(model_dir, "upstream"))
            samples[side].append(rate * batch if rate else None)
            shutil.rmtree(model_dir, ignore_errors=True)
            tf.keras.backend.clear_session()
    print(
        f"{model} {fmt_} b{batch}: keras {samples['keras']}, k2e {samples['k2e']}, "
        f"upstream {samples['upstream']}",
        file=sys.stderr,
        flush=True,
    )
    ratio = spread(ratios(samples["k2e"], samples["keras"]), 2)
    return row(
        PART,
        f"{model} {fmt_} b{batch}",
        spread(samples["k2e"], 1),
        "examples/s",
        baseline=spread(samples["keras"], 1),
        baseline_name="Keras fit",
        ratio=ratio,
        target=">= 1.0x Keras fit",
        met=ratio["median"] is not None and ratio["median"] >= 1.0,
        model=model,
        format=fmt_,
        batch=batch,
        steps=steps,
        upstream=spread(samples["upstream"], 1),
        upstream_ratio=spread(ratios(samples["upstream"], samples["keras"]), 2),
    )


#: The cells whose TensorBoard cost is measured: the fastest steps, where it shows most.
CURVES_CELLS = (("iris", "tfrecord", 32), ("two_io", "tfrecord", 32))
#: Runs of one setting on these machines differ by up to a third: a few percent needs more
#: and longer turns than the throughput cells.
CURVES_REPS, CURVES_STEPS = 8, 8000
CURVES_SIDES = {
    "none": {"run_config.save_summary_steps": 0, "eval.every_steps": "end"},
    "curves": {"eval.every_steps": "end"},
    "defaults": {"eval.every_steps": None},
}


def k2e_train(spec) -> dict:
    from k2e_core.steps import job

    with job.open_job(spec) as j:
        j.check_data()
        began = time.perf_counter()
        result = job._train(j)
        result["wall_seconds"] = time.perf_counter() - began
        return result


def measure_curves(model, fmt_, batch, steps, reps, work) -> dict:
    """k2e's TensorBoard defaults against none, the same job, in turns."""
    import tensorflow as tf

    from k2e_core.spec import load_spec

    train_file, mapping = write_data(model, MODELS[model][1], fmt_, work)
    rates = {side: [] for side in CURVES_SIDES}
    walls = {side: [] for side in CURVES_SIDES}
    for rep in range(reps):
        order = list(CURVES_SIDES)
        for side in order if rep % 2 == 0 else order[::-1]:
            model_dir = tempfile.mkdtemp(dir=work)
            spec = _spec(model, train_file, mapping, batch, steps, model_dir)
            result = k2e_train(load_spec(spec, CURVES_SIDES[side]))
            rates[side].append(result["examples_per_second"])
            walls[side].append(result["wall_seconds"])
            shutil.rmtree(model_dir, ignore_errors=True)
            tf.keras.backend.clear_session()
    print(f"{model} {fmt_} b{batch} TensorBoard: {rates}, wall {walls}", file=sys.stderr)
    ratio = spread(ratios(rates["curves"], rates["none"]), 2)
    return row(
        PART,
        f"{model} {fmt_} b{batch} train curves",
        spread(rates["curves"], 1),
        "examples/s",
        baseline=spread(rates["none"], 1),
        baseline_name="no curves",
        ratio=ratio,
        target=">= 0.95x without curves",
        met=ratio["median"] is not None and ratio["median"] >= 0.95,
        kind="curves",
        model=model,
        format=fmt_,
        batch=batch,
        steps=steps,
        walls={side: spread(values, 2) for side, values in walls.items()},
        per_evaluation=spread([(d - c) / 4 for d, c in zip(walls["defaults"], walls["curves"])], 2),
    )


#: The cells where the pre-made baselines' training is measured beside the model's.
BASELINE_CELLS = (("iris", "csv", 32), ("bag_of_words", "tfrecord", 32))
BASELINE_KINDS = ("linear", "dnn")


def baseline_rate(spec, kind) -> float | None:
    """examples/s of the job's pre-made baseline `kind` trained alone, as `k2e train`
    trains it after the model (same data, batch and steps)."""
    from k2e_core.spec import load_spec
    from k2e_core.steps import job

    spec = load_spec(spec, {"baseline": {"kind": kind, "steps": spec.train.steps}})
    with job.open_job(spec) as j:
        j.check_data()
        return j.trainer.train_baseline()["examples_per_second"]


def measure_baselines(model, fmt_, batch, steps, reps, work) -> list:
    """The pre-made baselines' training speed against the Keras model's, through k2e, in
    turns: what a baseline adds to a train step is about steps / its rate."""
    import tensorflow as tf

    train_file, mapping = write_data(model, MODELS[model][1], fmt_, work)
    rates = {side: [] for side in ("model", *BASELINE_KINDS)}
    for rep in range(reps):
        order = list(rates)
        for side in order if rep % 2 == 0 else order[::-1]:
            model_dir = tempfile.mkdtemp(dir=work)
            spec = _spec(model, train_file, mapping, batch, steps, model_dir)
            if side == "model":
                rate = k2e_rate(spec)
                rates[side].append(rate * batch if rate else None)
            else:
                rates[side].append(baseline_rate(spec, side))
            shutil.rmtree(model_dir, ignore_errors=True)
            tf.keras.backend.clear_session()
    print(f"{model} {fmt_} b{batch} baselines: {rates}", file=sys.stderr, flush=True)
    return [
        row(
            PART,
            f"{model} {fmt_} b{batch} pre-made {kind} baseline",
            spread(rates[kind], 1),
            "examples/s",
            baseline=spread(rates["model"], 1),
            baseline_name="the Keras model through k2e",
            ratio=spread(ratios(rates[kind], rates["model"]), 2),
            kind="premade",
            premade=kind,
            model=model,
            format=fmt_,
            batch=batch,
            steps=steps,
        )
        for kind in BASELINE_KINDS
    ]


def measure(reps: int, quick: bool, models) -> list:
    from k2e_core.estimator import compat  # noqa: F401 - TensorFlow, quietly

    work = tempfile.mkdtemp(prefix="k2e-bench-throughput-")
    try:
        rows = []
        for model in models:
            for fmt_ in FORMATS:
                for batch, full_steps in zip(BATCHES, MODELS[model][2:]):
                    if fmt_ == "csv":
                        full_steps //= CSV_STEPS_DIVISOR.get(model, 1)
                    steps = QUICK_STEPS if quick else full_steps
                    rows.append(measure_cell(model, fmt_, batch, steps, reps, work))
        for model, fmt_, batch in CURVES_CELLS:
            if model in models:
                steps, turns = (QUICK_STEPS, reps) if quick else (CURVES_STEPS, CURVES_REPS)
                rows.append(measure_curves(model, fmt_, batch, steps, turns, work))
        for model, fmt_, batch in BASELINE_CELLS:
            if model in models:
                steps = QUICK_STEPS if quick else MODELS[model][2] // 2
                rows += measure_baselines(model, fmt_, batch, steps, reps, work)
        return rows
    finally:
        shutil.rmtree(work, ignore_errors=True)


def table(rows) -> list:
    lines = [
        "| model | data | batch | steps | Keras fit | upstream model_to_estimator "
        "| k2e | k2e / Keras fit | >= 1.0x |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    curves = [r for r in rows if r.get("kind") == "curves"]
    premade = [r for r in rows if r.get("kind") == "premade"]
    for r in rows:
        if r in curves or r in premade:
            continue
        lines.append(
            f"| {r['model']} | {r['format']} | {r['batch']} | {r['steps']} "
            f"| {fmt_spread(r['baseline'], 0)} "
            f"| {fmt_spread(r['upstream'], 0)} ({fmt(r['upstream_ratio']['median'], 2)}x) "
            f"| {fmt_spread(r['value'], 0)} | {fmt_spread(r['ratio'], 2, 'x')} | {met_cell(r)} |"
        )
    if curves:
        lines += [
            "",
            "What TensorBoard costs: the training rate with the default train curves "
            "against none; the train step's wall time with no curves, with curves, and with "
            "the defaults (curves and 5 evaluations, a checkpoint at each; with `every_steps: "
            "end` the train step evaluates none); what each evaluation costs:",
            "",
            "| model | data | batch | steps | no curves | train curves | ratio | >= 0.95x "
            "| wall: none | wall: curves | wall: defaults | per evaluation |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in curves:
            walls = r["walls"]
            lines.append(
                f"| {r['model']} | {r['format']} | {r['batch']} | {r['steps']} "
                f"| {fmt_spread(r['baseline'], 0)} | {fmt_spread(r['value'], 0)} "
                f"| {fmt_spread(r['ratio'], 2, 'x')} | {met_cell(r)} "
                f"| {fmt_spread(walls['none'], 2)} s | {fmt_spread(walls['curves'], 2)} s "
                f"| {fmt_spread(walls['defaults'], 2)} s | {fmt_spread(r['per_evaluation'], 2)} s |"
            )
    if premade:
        lines += [
            "",
            "What a pre-made baseline (`baseline:`) costs: its training rate beside the Keras "
            "model's, through k2e, on the same data, batch and steps (the train step trains "
            "it after the model, so it adds about steps / its rate):",
            "",
            "| model | data | batch | steps | pre-made | Keras model | pre-made | "
            "pre-made / model |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in premade:
            lines.append(
                f"| {r['model']} | {r['format']} | {r['batch']} | {r['steps']} | {r['premade']} "
                f"| {fmt_spread(r['baseline'], 0)} | {fmt_spread(r['value'], 0)} "
                f"| {fmt_spread(r['ratio'], 2, 'x')} |"
            )
    return lines


def main(argv=None):
    parser = part_parser(__doc__, reps=3, quick=f"iris only, {QUICK_STEPS} steps, one rep")
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args(argv)
    models = ["iris"] if args.quick and args.models == ",".join(MODELS) else args.models.split(",")
    return finish(measure(1 if args.quick else args.reps, args.quick, models), table, args.json)


if __name__ == "__main__":
    main()
