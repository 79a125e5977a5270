"""What the orchestrators cost a k2e job: importing the Airflow operators, parsing dags/,
and the iris job through `k2e run`, the example retraining DAG (`airflow dags test`) and the
KFP pipeline on kfp's local runner, in the same run.

    .venv/bin/python bench/orchestration.py [--reps 3] [--quick]

Each figure is the wall time of fresh processes, several times; reported are medians and the
spread. The DAG and the pipeline run convert, train, evaluate and export as four tasks;
`k2e run` does the same work in one process. A throwaway AIRFLOW_HOME is made and removed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)

_IMPORT = """
import sys, time
began = time.perf_counter()
import airflow.sdk
sdk = time.perf_counter()
import {module}
done = time.perf_counter()
assert "tensorflow" not in sys.modules
print(done - sdk, done - began)
"""
_PARSE = """
import sys, time
import airflow.sdk
from airflow.dag_processing.dagbag import DagBag
began = time.perf_counter()
bag = DagBag(dag_folder={dags!r})
seconds = time.perf_counter() - began
assert not bag.import_errors and "tensorflow" not in sys.modules
print(seconds)
"""


_KFP = """
import sys
from kfp import local
from kfp_components.pipelines import training_pipeline
local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=sys.argv[1])
training_pipeline(spec=sys.argv[2], train_steps=int(sys.argv[3]), export_base=sys.argv[1] + "/models")
"""


def _python_seconds(code: str, env) -> list[float]:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True, timeout=120).stdout
    return [float(v) for v in out.strip().splitlines()[-1].split()]


def _timed(command, env) -> float:
    began = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command[:3])} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return time.perf_counter() - began


def _spec_file(workdir: str) -> str:
    """examples/iris.yaml with absolute paths and freshly generated data."""
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
    return path


def _stats(values):
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one rep, 100 steps (smoke test)")
    args = parser.parse_args(argv)
    reps = 1 if args.quick else args.reps
    steps = 100 if args.quick else 1000
    workdir = tempfile.mkdtemp(prefix="k2e-bench-orchestration-")
    env = {**os.environ, "AIRFLOW_HOME": os.path.join(workdir, "airflow"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__DAGS_FOLDER": os.path.join(REPO, "dags"), "PYTHONWARNINGS": "ignore"}
    try:
        imports = [_python_seconds(_IMPORT.format(module="airflow_plugin.operators.k2e"), env)
                   for _ in range(reps)]
        operators, cold = [i[0] for i in imports], [i[1] for i in imports]
        parse = [_python_seconds(_PARSE.format(dags=os.path.join(REPO, "dags")), env)[0]
                 for _ in range(reps)]
        subprocess.run([os.path.join(BIN, "airflow"), "db", "migrate"], env=env, check=True,
                       capture_output=True, timeout=300)
        spec = _spec_file(workdir)
        cli, dag, kfp = [], [], []
        for rep in range(reps):
            root = os.path.join(workdir, f"rep{rep}")
            cli.append(_timed([os.path.join(BIN, "k2e"), "run", spec,
                               "--set", f"model_dir={root}/cli/model",
                               "--set", f"export.base={root}/cli/models",
                               "--set", f"train.steps={steps}"], env))
            with open(spec) as f:
                train_files = json.load(f)["data"]["train"]["files"]
            conf = {"spec": spec, "root": f"{root}/dag", "train_steps": steps,
                    "train_files": train_files}
            dag.append(_timed([os.path.join(BIN, "airflow"), "dags", "test", "k2e_iris_retraining",
                               f"2026-01-{rep + 1:02d}", "--conf", json.dumps(conf)], env))
            kfp.append(_timed([sys.executable, "-c", _KFP, f"{root}/kfp", spec, str(steps)], env))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    ratios = [d / c for d, c in zip(dag, cli)]
    kfp_ratios = [k / c for k, c in zip(kfp, cli)]
    report = {
        "operators_import_ms": {k: round(v * 1000, 1) for k, v in _stats(operators).items()},
        "operators_import_cold_ms": {k: round(v * 1000, 1) for k, v in _stats(cold).items()},
        "dags_parse_ms": {k: round(v * 1000, 1) for k, v in _stats(parse).items()},
        "train_steps": steps,
        "k2e_run_s": _stats(cli),
        "airflow_dags_test_s": _stats(dag),
        "dag_over_k2e_run": _stats(ratios),
        "kfp_local_s": _stats(kfp),
        "kfp_over_k2e_run": _stats(kfp_ratios),
    }
    print(f"import airflow_plugin.operators.k2e: {report['operators_import_ms']['median']} ms "
          f"after airflow.sdk, {report['operators_import_cold_ms']['median']} ms cold")
    print(f"parse dags/ (after airflow.sdk): {report['dags_parse_ms']['median']} ms")
    print(f"iris job, {steps} steps: k2e run {report['k2e_run_s']['median']} s, "
          f"airflow dags test {report['airflow_dags_test_s']['median']} s, "
          f"ratio {report['dag_over_k2e_run']['median']}x "
          f"({report['dag_over_k2e_run']['min']}-{report['dag_over_k2e_run']['max']}), "
          f"kfp local runner {report['kfp_local_s']['median']} s, "
          f"ratio {report['kfp_over_k2e_run']['median']}x "
          f"({report['kfp_over_k2e_run']['min']}-{report['kfp_over_k2e_run']['max']})")
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
