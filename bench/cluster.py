"""Local-cluster throughput: `k2e train --cluster` against one `k2e train` process, same
machine, same spec, same files.

    .venv/bin/python bench/cluster.py [--reps 3] [--quick]

For each model (iris at batch 256, bag of words at batch 32; TFRecord files the bench
writes) and each layout (chief + 1 worker + 1 ps, chief + 2 workers + 1 ps), in turns with
the single process in each repetition. The rate is the steady-state global steps/s the
chief saw (every trainer's steps count) times the batch; wall is the whole command, start-up
of every process included. Reported: examples/s and wall, cluster / single per repetition.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import (  # noqa: E402
    BIN,
    REPO,
    finish,
    fmt,
    fmt_spread,
    part_parser,
    ratios,
    row,
    spread,
)
from bench.throughput import write_data  # noqa: E402

PART = "cluster"
#: model -> (example spec, rows, batch, steps): about five seconds of single-process training.
MODELS = {
    "iris": ("iris.yaml", 1200, 256, 2000),
    "bag_of_words": ("bag_of_words.yaml", 2000, 32, 3000),
}
LAYOUTS = ("workers=1,ps=1", "workers=2,ps=1")
QUICK_STEPS = 40


def _spec_file(model, train_file, mapping, batch, steps, work) -> str:
    from k2e_core.spec import load_spec

    spec = load_spec(
        os.path.join(REPO, "examples", MODELS[model][0]),
        {
            "data.train.files": train_file,
            "data.eval": None,
            "data.cache": False,
            "data.batch_size": batch,
            "train.steps": steps,
            "model_dir": os.path.join(work, "model"),
            "export": None,
            "baseline": None,  # the model's training alone
            **mapping,
        },
    )
    path = os.path.join(work, f"{model}.json")
    with open(path, "w") as f:
        f.write(spec.model_dump_json(exclude_unset=True))
    return path


def _train(spec_file, layout, batch) -> tuple[float | None, float]:
    """(examples/s, wall seconds) of one `k2e train` in a fresh model_dir."""
    import time

    with open(spec_file) as f:
        model_dir = json.load(f)["model_dir"]
    shutil.rmtree(model_dir, ignore_errors=True)
    command = [os.path.join(BIN, "k2e"), "train", spec_file] + (
        ["--cluster", layout] if layout else []
    )
    began = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO)
    wall = time.perf_counter() - began
    if proc.returncode != 0:
        raise SystemExit(f"bench cluster: {' '.join(command)} failed:\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    rate = result.get("steps_per_second")
    return (rate * batch if rate else None), wall


def measure(reps: int, quick: bool) -> list:
    from k2e_core.estimator import compat  # noqa: F401 - TensorFlow, quietly

    work = tempfile.mkdtemp(prefix="k2e-bench-cluster-")
    rows = []
    try:
        for model in ["iris"] if quick else MODELS:
            _, rows_n, batch, steps = MODELS[model]
            steps = QUICK_STEPS if quick else steps
            train_file, mapping = write_data(model, rows_n, "tfrecord", work)
            spec_file = _spec_file(model, train_file, mapping, batch, steps, work)
            layouts = LAYOUTS[:1] if quick else LAYOUTS
            sides = [None, *layouts]
            rates = {s: [] for s in sides}
            walls = {s: [] for s in sides}
            for rep in range(reps):
                for side in sides if rep % 2 == 0 else sides[::-1]:
                    rate, wall = _train(spec_file, side, batch)
                    rates[side].append(rate)
                    walls[side].append(wall)
            print(
                f"{model}: {json.dumps(rates)} walls {json.dumps(walls)}",
                file=sys.stderr,
                flush=True,
            )
            for layout in layouts:
                rows.append(
                    row(
                        PART,
                        f"{model} b{batch}, {layout}",
                        spread(rates[layout], 1),
                        "examples/s",
                        baseline=spread(rates[None], 1),
                        baseline_name="one process",
                        ratio=spread(ratios(rates[layout], rates[None]), 2),
                        model=model,
                        batch=batch,
                        steps=steps,
                        layout=layout,
                        wall=spread(walls[layout], 2),
                        baseline_wall=spread(walls[None], 2),
                        wall_ratio=spread(ratios(walls[layout], walls[None]), 2),
                    )
                )
        return rows
    finally:
        shutil.rmtree(work, ignore_errors=True)


def table(rows) -> list:
    lines = [
        f"| model | layout | steps | one process | cluster | cluster / one process "
        f"| wall, one process | wall, cluster ({os.cpu_count()} cores) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} b{r['batch']} | {r['layout']} | {r['steps']} "
            f"| {fmt_spread(r['baseline'], 0)} | {fmt_spread(r['value'], 0)} "
            f"| {fmt_spread(r['ratio'], 2, 'x')} | {fmt_spread(r['baseline_wall'], 1, ' s')} "
            f"| {fmt_spread(r['wall'], 1, ' s')} ({fmt(r['wall_ratio']['median'], 2)}x) |"
        )
    return lines


def main(argv=None):
    parser = part_parser(__doc__, reps=3, quick=f"iris, one layout, {QUICK_STEPS} steps, one rep")
    args = parser.parse_args(argv)
    return finish(measure(1 if args.quick else args.reps, args.quick), table, args.json)


if __name__ == "__main__":
    main()
