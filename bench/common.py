"""What the bench parts share: repetition statistics, result rows, the machine and versions.

A part's result is a list of rows (dicts); a row with a `target` says whether it is `met`.
Ratios are computed per repetition (k2e and its baseline measured side by side) and then
summarised, so a slow moment of a shared machine moves both sides of one ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
PACKAGES = (
    "tensorflow-cpu",
    "tensorflow-estimator",
    "keras",
    "apache-airflow",
    "kfp",
    "fsspec",
    "s3fs",
    "moto",
)


def spread(values, digits=3) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "n": len(values),
    }


def row(
    part: str,
    measure: str,
    value: dict,
    unit: str,
    baseline: dict | None = None,
    baseline_name: str | None = None,
    ratio: dict | None = None,
    target: str | None = None,
    met: bool | None = None,
    **extra,
) -> dict:
    return {
        "part": part,
        "measure": measure,
        "value": value,
        "unit": unit,
        "baseline": baseline,
        "baseline_name": baseline_name,
        "ratio": ratio,
        "target": target,
        "met": met,
        **extra,
    }


def start_server(command, port):
    """Starts `command` (a server on 127.0.0.1:`port`) and waits until it answers."""
    import subprocess
    import time

    import requests

    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            requests.get(f"http://127.0.0.1:{port}", timeout=1)
            return proc
        except requests.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"{command[0]} did not start on port {port}")


def ratios(values, baselines) -> list:
    return [v / b for v, b in zip(values, baselines) if v is not None and b]


def machine() -> dict:
    from importlib import metadata

    memory = None
    try:
        with open("/proc/meminfo") as f:
            memory = round(int(f.readline().split()[1]) / 2**20, 1)  # MemTotal, kB -> GiB
    except OSError:
        pass
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cores": os.cpu_count(),
        "memory_gib": memory,
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "system": platform.platform(terse=True),
        "versions": versions,
    }


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def part_parser(doc: str, reps: int, quick: str) -> argparse.ArgumentParser:
    """The options every part takes: --reps, --quick (the smoke test) and --json."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--reps", type=int, default=reps)
    parser.add_argument("--quick", action="store_true", help=f"smoke test: {quick}")
    parser.add_argument("--json", help="write the rows here instead of stdout")
    return parser


def finish(rows: list, table, json_out: str | None) -> list:
    """Prints the part's table on stderr; its rows go into `json_out`, or as the last line
    of stdout."""
    print("\n".join(table(rows)), file=sys.stderr)
    if json_out:
        with open(json_out, "w") as f:
            json.dump(rows, f)
    else:
        print(json.dumps(rows))
    return rows


def fmt(value, digits=None) -> str:
    if value is None:
        return "n/a"
    if digits is None:
        digits = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2
    return f"{value:,.{digits}f}"


def fmt_spread(s: dict | None, digits=None, suffix="") -> str:
    if not s or s.get("median") is None:
        return "n/a"
    text = fmt(s["median"], digits) + suffix
    if s.get("n", 1) > 1:
        text += f" ({fmt(s['min'], digits)}-{fmt(s['max'], digits)})"
    return text


def met_cell(r: dict) -> str:
    return "" if r.get("met") is None else ("yes" if r["met"] else "**no**")
