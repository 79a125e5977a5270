"""The k2e benchmark suite: every part, side by side with its baseline, in one run.

    .venv/bin/python bench/run.py [--reps 3] [--quick] [--parts throughput,...] [--readme]

Parts: throughput (k2e against Keras fit), pipeline (against hand-written tf.data, shards,
streaming from S3), startup (imports, DAG parsing, `k2e --help`,
conversion), orchestration (k2e run against Airflow and KFP), storage (concurrent publish,
resume bytes), cluster, keras_trainer (the Keras trainer against Keras 3 fit, in
.venv-keras). Each runs in a process of its own. Writes REPORT.md and report.json to
--out (default bench/results) with the date, the machine and the versions; `--readme` also
puts the tables into README.md between its bench markers. `--quick` is the smoke test CI
runs: every part, tiny sizes, one repetition; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import REPO, machine  # noqa: E402

PARTS = {
    "throughput": "Training throughput (examples/s; median of repetitions, min-max)",
    "pipeline": "Input pipelines against hand-written tf.data (median of repetitions, min-max)",
    "startup": "Start-up",
    "orchestration": "Orchestration overhead (wall time of fresh commands)",
    "storage": "Storage (moto S3 server on 127.0.0.1)",
    "cluster": "Local cluster against one process (examples/s, steady state)",
    "keras_trainer": "The Keras trainer against Keras 3 fit (examples/s; TensorFlow 2.21, "
    ".venv-keras)",
}
#: Parts that run in another environment's interpreter (the Keras trainer's TensorFlow 2.21).
PYTHONS = {"keras_trainer": os.path.join(REPO, ".venv-keras", "bin", "python")}
MARKERS = ("<!-- bench:start -->", "<!-- bench:end -->")


def run_part(name: str, reps: int | None, quick: bool) -> list:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    python = PYTHONS.get(name, sys.executable)
    command = [python, os.path.join(REPO, "bench", f"{name}.py"), "--json", out]
    if quick:
        command.append("--quick")
    elif reps:
        command += ["--reps", str(reps)]
    began = time.perf_counter()
    print(f"bench: {name} ...", file=sys.stderr, flush=True)
    proc = subprocess.run(command, cwd=REPO, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if proc.returncode != 0:
        raise SystemExit(f"bench: part {name} failed (exit {proc.returncode})")
    with open(out) as f:
        rows = json.load(f)
    os.remove(out)
    print(f"bench: {name} done in {time.perf_counter() - began:.0f}s", file=sys.stderr, flush=True)
    return rows


def markdown(report: dict) -> str:
    m = report["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    lines = [
        f"Measured {report['date']} on {m['cores']} cores, {m['memory_gib']} GiB "
        f"({m['cpu'] or 'unknown CPU'}), Python {m['python']}; {versions}. "
        f"`{report['command']}`, {report['wall_seconds'] / 60:.0f} min."
    ]
    if report["quick"]:
        lines.append(
            "Smoke mode (--quick): tiny sizes, one repetition; these figures mean nothing."
        )
    for name, rows in report["parts"].items():
        module = importlib.import_module(f"bench.{name}")
        lines += ["", f"#### {PARTS[name]}", "", *module.table(rows)]
    missed = [
        r["measure"] for rows in report["parts"].values() for r in rows if r.get("met") is False
    ]
    lines += ["", f"Targets missed: {'; '.join(missed)}." if missed else "Every target met."]
    return "\n".join(lines) + "\n"


def update_readme(text: str) -> None:
    path = os.path.join(REPO, "README.md")
    with open(path) as f:
        readme = f.read()
    start, end = MARKERS
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    if not pattern.search(readme):
        raise SystemExit(f"bench: README.md has no {start} ... {end} section")
    with open(path, "w") as f:
        f.write(pattern.sub(lambda _: f"{start}\n{text}{end}", readme))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, help="repetitions per measure (default: each part's)")
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny sizes, one rep")
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "results"))
    parser.add_argument("--readme", action="store_true", help="also update README.md's table")
    args = parser.parse_args(argv)
    parts = args.parts.split(",")
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"--parts: unknown {unknown}; choose from {list(PARTS)}")
    began = time.perf_counter()
    report = {
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "command": " ".join(["bench/run.py", *(sys.argv[1:] if argv is None else argv)]),
        "quick": args.quick,
        "parts": {},
    }
    for name in parts:
        report["parts"][name] = run_part(name, args.reps, args.quick)
    report["wall_seconds"] = round(time.perf_counter() - began, 1)
    text = markdown(report)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(args.out, "REPORT.md"), "w") as f:
        f.write(text)
    if args.readme:
        update_readme(text)
    print(text)
    return report


if __name__ == "__main__":
    main()
