"""The Keras trainer against plain Keras 3 `fit` (TensorFlow 2.21; runs in .venv-keras).

    .venv-keras/bin/python bench/keras_trainer.py [--reps 3] [--quick]

For iris and the two-input two-output model, TFRecord and CSV, batch 32 and 256 (the
throughput part's cells): the same model from the examples' factory, the same k2e input
pipeline (no cache), the same steps, in turns:
  * Keras `model.fit` (baseline): a 50-step fit first, then the timed fit, as a user runs it;
  * the Keras trainer (`trainer: keras`): `k2e train`'s path with checkpoints and train
    curves at their defaults (a checkpoint every 60 s, a curve point every 100 steps) and one
    evaluation at the end, its steady-state rate after the first span of steps.
The Estimator trainer's figures on the same cells are the throughput part's (.venv).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import finish, fmt_spread, met_cell, part_parser, ratios, row, spread  # noqa: E402
from bench.throughput import (  # noqa: E402
    CSV_STEPS_DIVISOR,
    MODELS,
    QUICK_STEPS,
    WARMUP_STEPS,
    _spec,
    k2e_rate,
    write_data,
)

PART = "keras_trainer"
CELLS = [
    (model, fmt_, batch)
    for model in ("iris", "two_io")
    for fmt_ in ("tfrecord", "csv")
    for batch in (32, 256)
]
TARGET = 0.95


def keras_trainer_spec(model, train_file, mapping, batch, steps, model_dir):
    spec = _spec(model, train_file, mapping, batch, steps, model_dir)
    return spec.model_copy(update={"trainer": "keras"})


def fit_rate(spec, steps) -> float:
    from k2e_core.keras_trainer import training
    from k2e_core.steps import job

    with job.open_job(spec) as j:
        model = j.model
        dataset = j.data.input_fn("train")().map(training.for_fit(j.trainer.to_model))
        model.fit(dataset, steps_per_epoch=WARMUP_STEPS, epochs=1, verbose=0)
        began = time.perf_counter()
        model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0)
        return steps / (time.perf_counter() - began)


def measure_cell(model, fmt_, batch, steps, reps, work) -> dict:
    import keras

    train_file, mapping = write_data(model, MODELS[model][1], fmt_, work)
    samples = {"fit": [], "trainer": []}
    for rep in range(reps):
        order = ["fit", "trainer"]
        for side in order if rep % 2 == 0 else order[::-1]:
            model_dir = tempfile.mkdtemp(dir=work)
            spec = keras_trainer_spec(model, train_file, mapping, batch, steps, model_dir)
            rate = fit_rate(spec, steps) if side == "fit" else k2e_rate(spec)
            samples[side].append(rate * batch if rate else None)
            shutil.rmtree(model_dir, ignore_errors=True)
            keras.backend.clear_session()
    print(f"{model} {fmt_} b{batch}: {samples}", file=sys.stderr, flush=True)
    ratio = spread(ratios(samples["trainer"], samples["fit"]), 2)
    return row(
        PART,
        f"{model} {fmt_} b{batch}",
        spread(samples["trainer"], 1),
        "examples/s",
        baseline=spread(samples["fit"], 1),
        baseline_name="Keras 3 fit",
        ratio=ratio,
        target=f">= {TARGET}x Keras 3 fit",
        met=ratio["median"] is not None and ratio["median"] >= TARGET,
        model=model,
        format=fmt_,
        batch=batch,
        steps=steps,
    )


def measure(reps: int, quick: bool) -> list:
    from k2e_core.keras_trainer import training  # noqa: F401 - TensorFlow, quietly

    work = tempfile.mkdtemp(prefix="k2e-bench-keras-")
    try:
        cells = CELLS[:1] if quick else CELLS
        rows = []
        for model, fmt_, batch in cells:
            steps = MODELS[model][2 if batch == 32 else 3]
            if fmt_ == "csv":
                steps //= CSV_STEPS_DIVISOR.get(model, 1)
            rows.append(
                measure_cell(model, fmt_, batch, QUICK_STEPS if quick else steps, reps, work)
            )
        return rows
    finally:
        shutil.rmtree(work, ignore_errors=True)


def table(rows) -> list:
    lines = [
        "| model | data | batch | steps | Keras 3 fit | Keras trainer | trainer / fit "
        f"| >= {TARGET}x |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['format']} | {r['batch']} | {r['steps']} "
            f"| {fmt_spread(r['baseline'], 0)} | {fmt_spread(r['value'], 0)} "
            f"| {fmt_spread(r['ratio'], 2, 'x')} | {met_cell(r)} |"
        )
    return lines


def main(argv=None):
    parser = part_parser(__doc__, reps=3, quick=f"iris TFRecord b32 only, {QUICK_STEPS} steps")
    args = parser.parse_args(argv)
    return finish(measure(1 if args.quick else args.reps, args.quick), table, args.json)


if __name__ == "__main__":
    main()
