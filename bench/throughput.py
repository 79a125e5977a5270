"""Training throughput of k2e against Keras `fit`, same model, same tf.data pipeline.

    .venv/bin/python bench/throughput.py [--reps 3] [--quick]

Both sides read the examples' files through k2e's input pipeline, at the same batch size,
after a warm-up. Reported: steady-state steps/s (median of reps and spread), the ratio
k2e / Keras measured in the same run, and conversion time. Ratios, not absolute numbers,
are what to compare across machines.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

from k2e_core import job  # noqa: E402
from k2e_core._tensorflow import tf  # noqa: E402

CASES = {
    "iris": ("iris.yaml", 1500),
    "bag_of_words": ("bag_of_words.yaml", 300),
}


def _spec(name, batch, steps, workdir):
    spec_file, _ = CASES[name]
    spec = job.load_spec(os.path.join(REPO, "examples", spec_file), {
        "data.batch_size": batch,
        "train.steps": steps,
        "model_dir": os.path.join(workdir, "model"),
        "export": None,
    })
    return spec


def keras_steps_per_second(j, steps):
    model = j.model
    ds = j.input_fn("train")()
    model.fit(ds, steps_per_epoch=min(50, steps), epochs=1, verbose=0)  # warm-up
    began = time.perf_counter()
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
    return steps / (time.perf_counter() - began)


def k2e_run(j):
    began = time.perf_counter()
    j.convert()
    convert_seconds = time.perf_counter() - began
    result = job._train(j)
    return result["steps_per_second"], convert_seconds


def measure(name, batch, steps):
    with tempfile.TemporaryDirectory() as tmp, job._job(_spec(name, batch, steps, tmp)) as j:
        j.plan()
        k2e_rate, convert_seconds = k2e_run(j)
        keras_rate = keras_steps_per_second(j, steps)
    return keras_rate, k2e_rate, convert_seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="few steps, one rep (smoke test)")
    args = parser.parse_args(argv)
    if not os.path.isdir(os.path.join(REPO, "examples", "data")):
        sys.path.insert(0, os.path.join(REPO, "examples"))
        import generate_data

        generate_data.main()
    rows = []
    for name, (_, steps) in CASES.items():
        for batch in (32, 256):
            n = 20 if args.quick else (steps if batch == 32 else max(steps // 4, 100))
            samples = [measure(name, batch, n) for _ in range(1 if args.quick else args.reps)]
            keras = [s[0] for s in samples]
            k2e = [s[1] for s in samples]
            ratios = [b / a for a, b in zip(keras, k2e)]
            rows.append({
                "model": name, "batch": batch, "steps": n,
                "keras_steps_per_s": round(statistics.median(keras), 1),
                "k2e_steps_per_s": round(statistics.median(k2e), 1),
                "ratio": round(statistics.median(ratios), 2),
                "ratio_min": round(min(ratios), 2), "ratio_max": round(max(ratios), 2),
                "convert_s": round(statistics.median(s[2] for s in samples), 3),
            })
            print(json.dumps(rows[-1]), file=sys.stderr)
    print("| model | batch | Keras fit steps/s | k2e steps/s | k2e / Keras (min-max) | convert s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['batch']} | {r['keras_steps_per_s']} | {r['k2e_steps_per_s']} | "
              f"{r['ratio']} ({r['ratio_min']}-{r['ratio_max']}) | {r['convert_s']} |")
    return rows


if __name__ == "__main__":
    main()
