"""What the orchestrators cost the iris job: `k2e run` against the same job through Airflow
(`airflow dags test`) and through KFP's local runner, each as one task and as four.

    .venv/bin/python bench/orchestration.py [--reps 3] [--quick]

Every figure is the wall time of a fresh command, repeated in turns; ratios are taken per
repetition against that repetition's `k2e run`. The floors are the same commands on no-op
tasks (EmptyOperator, an empty lightweight component): what the orchestrator costs before
k2e does anything, so `DAG - floor` is what k2e itself costs inside it. A throwaway
AIRFLOW_HOME (SQLite) is made and removed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import yaml

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

PART = "orchestration"
TARGET = 1.5

_FLOOR_DAGS = """
from datetime import datetime
from airflow.sdk import DAG, chain
from airflow.providers.standard.operators.empty import EmptyOperator
for tasks in (1, 4):
    with DAG(dag_id=f"k2e_bench_floor_{tasks}", schedule=None, start_date=datetime(2026, 1, 1)):
        chain(*[EmptyOperator(task_id=f"noop_{i}") for i in range(tasks)])
"""
_KFP = """
import sys
from kfp import dsl, local


@dsl.component
def noop(value: int) -> int:
    return value


@dsl.pipeline
def floor_1() -> int:
    return noop(value=1).output


@dsl.pipeline
def floor_4() -> int:
    task = noop(value=1)
    for _ in range(3):
        task = noop(value=task.output)
    return task.output


def main(which, root, spec, steps):
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=root)
    if which.startswith("floor"):
        globals()[which]()
        return
    from kfp_components import pipelines

    pipeline = {"job": pipelines.job_pipeline, "training": pipelines.training_pipeline}[which]
    pipeline(spec=spec, train_steps=int(steps), export_base=root + "/models")


main(*sys.argv[1:])
"""


def _spec_file(workdir: str) -> tuple[str, str]:
    """examples/iris.yaml with absolute paths and freshly generated data: (path, train files)."""
    sys.path.insert(0, os.path.join(REPO, "examples"))
    import generate_data

    data = os.path.join(workdir, "data")
    generate_data.main(data)
    with open(os.path.join(REPO, "examples", "iris.yaml")) as f:
        spec = yaml.safe_load(f)
    spec["model"]["factory"] = os.path.join(REPO, "examples", "models.py:iris_model")
    spec["data"]["train"]["files"] = os.path.join(data, "iris_train.csv")
    spec["data"]["eval"]["files"] = os.path.join(data, "iris_test.csv")
    path = os.path.join(workdir, "iris.json")
    with open(path, "w") as f:
        json.dump(spec, f)
    return path, spec["data"]["train"]["files"]


def _timed(command, env) -> float:
    began = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return time.perf_counter() - began


def measure(reps: int, steps: int) -> list:
    workdir = tempfile.mkdtemp(prefix="k2e-bench-orchestration-")
    floors = os.path.join(workdir, "floor-dags")
    os.makedirs(floors)
    with open(os.path.join(floors, "k2e_bench_floors.py"), "w") as f:
        f.write(_FLOOR_DAGS)
    kfp_script = os.path.join(workdir, "kfp_bench.py")
    with open(kfp_script, "w") as f:
        f.write(_KFP)
    env = {
        **os.environ,
        "AIRFLOW_HOME": os.path.join(workdir, "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "PYTHONWARNINGS": "ignore",
    }
    dags_env = {**env, "AIRFLOW__CORE__DAGS_FOLDER": os.path.join(REPO, "dags")}
    floor_env = {**env, "AIRFLOW__CORE__DAGS_FOLDER": floors}
    airflow = os.path.join(BIN, "airflow")
    times = {
        k: []
        for k in (
            "cli",
            "dag_1",
            "dag_4",
            "floor_dag_1",
            "floor_dag_4",
            "kfp_1",
            "kfp_4",
            "floor_kfp_1",
            "floor_kfp_4",
        )
    }
    try:
        subprocess.run(
            [airflow, "db", "migrate"], env=dags_env, check=True, capture_output=True, timeout=300
        )
        spec, train_files = _spec_file(workdir)
        for rep in range(reps):
            root = os.path.join(workdir, f"rep{rep}")
            date = f"2026-01-{rep + 1:02d}"
            commands = {
                "cli": (
                    [
                        os.path.join(BIN, "k2e"),
                        "run",
                        spec,
                        "--set",
                        f"model_dir={root}/cli/model",
                        "--set",
                        f"export.base={root}/cli/models",
                        "--set",
                        f"train.steps={steps}",
                    ],
                    env,
                ),
                "dag_1": (
                    [
                        airflow,
                        "dags",
                        "test",
                        "k2e_iris",
                        date,
                        "--conf",
                        json.dumps({"spec": spec, "root": f"{root}/dag1", "train_steps": steps}),
                    ],
                    dags_env,
                ),
                "dag_4": (
                    [
                        airflow,
                        "dags",
                        "test",
                        "k2e_iris_retraining",
                        date,
                        "--conf",
                        json.dumps(
                            {
                                "spec": spec,
                                "root": f"{root}/dag4",
                                "train_steps": steps,
                                "train_files": train_files,
                            }
                        ),
                    ],
                    dags_env,
                ),
                "floor_dag_1": ([airflow, "dags", "test", "k2e_bench_floor_1", date], floor_env),
                "floor_dag_4": ([airflow, "dags", "test", "k2e_bench_floor_4", date], floor_env),
                "kfp_1": (
                    [sys.executable, kfp_script, "job", f"{root}/kfp1", spec, str(steps)],
                    env,
                ),
                "kfp_4": (
                    [sys.executable, kfp_script, "training", f"{root}/kfp4", spec, str(steps)],
                    env,
                ),
                "floor_kfp_1": (
                    [sys.executable, kfp_script, "floor_1", f"{root}/f1", "", "0"],
                    env,
                ),
                "floor_kfp_4": (
                    [sys.executable, kfp_script, "floor_4", f"{root}/f4", "", "0"],
                    env,
                ),
            }
            order = list(commands) if rep % 2 == 0 else list(commands)[::-1]
            for name in order:
                times[name].append(_timed(*commands[name]))
            print(
                f"rep {rep}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()),
                file=sys.stderr,
                flush=True,
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    cli = spread(times["cli"], 2)
    rows = [row(PART, f"k2e run (iris, {steps} steps)", cli, "s")]
    for key, name, tasks in (
        ("dag_1", "Airflow DAG k2e_iris (airflow dags test)", 1),
        ("dag_4", "Airflow DAG k2e_iris_retraining (airflow dags test)", 4),
        ("kfp_1", "KFP job_pipeline (local runner)", 1),
        ("kfp_4", "KFP training_pipeline (local runner)", 4),
    ):
        floor = times[f"floor_{key}"]
        own = [t - f for t, f in zip(times[key], floor)]
        ratio = spread(ratios(times[key], times["cli"]), 2)
        rows.append(
            row(
                PART,
                f"{name}, {tasks} task{'s' if tasks > 1 else ''}",
                spread(times[key], 2),
                "s",
                baseline=cli,
                baseline_name="k2e run",
                ratio=ratio,
                target=f"<= {TARGET}x k2e run",
                met=ratio["median"] <= TARGET,
                tasks=tasks,
                floor=spread(floor, 2),
                without_floor=spread(own, 2),
                without_floor_ratio=spread(ratios(own, times["cli"]), 2),
            )
        )
    return rows


def table(rows) -> list:
    lines = [
        "| how the iris job runs | wall | / k2e run | target | met | no-op floor "
        "| wall - floor | (wall - floor) / k2e run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.get("baseline") is None:
            lines.append(
                f"| {r['measure']} | {fmt_spread(r['value'], 2, ' s')} | 1.00x | | | | | |"
            )
            continue
        lines.append(
            f"| {r['measure']} | {fmt_spread(r['value'], 2, ' s')} "
            f"| {fmt_spread(r['ratio'], 2, 'x')} "
            f"| {r['target']} | {met_cell(r)} | {fmt_spread(r['floor'], 2, ' s')} "
            f"| {fmt_spread(r['without_floor'], 2, ' s')} "
            f"| {fmt_spread(r['without_floor_ratio'], 2, 'x')} |"
        )
    return lines


def main(argv=None):
    args = part_parser(__doc__, reps=3, quick="one rep, 100 steps").parse_args(argv)
    rows = measure(1 if args.quick else args.reps, 100 if args.quick else 1000)
    return finish(rows, table, args.json)


if __name__ == "__main__":
    main()
