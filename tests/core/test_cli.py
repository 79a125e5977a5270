"""The `k2e` command: results, overrides, schema, and one-line errors for bad input."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from tests.conftest import REPO

K2E = os.path.join(os.path.dirname(sys.executable), "k2e")


def _write(tmp_path, spec, name="job.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def _main(args, capsys):
    from k2e_core.cli import main

    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_console_script_runs_a_job_with_clean_logs_and_a_json_last_line(iris_spec, tmp_path):
    spec = _write(tmp_path, iris_spec)
    proc = subprocess.run([K2E, "run", spec, "--set", "train.steps=40"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert os.path.isfile(os.path.join(result["export_path"], "saved_model.pb"))
    assert result["global_step"] == 40 and "loss" in result["metrics"]
    log = proc.stderr
    assert "step 40/40  loss " in log and "steps/s" in log
    for noise in ("WARNING:tensorflow", "Instructions for updating", "deprecated", "UserWarning"):
        assert noise not in log, f"TensorFlow noise in the log: {noise}"
    assert len(log.splitlines()) < 20


def test_set_overrides_and_validate(iris_spec, tmp_path, capsys):
    spec = _write(tmp_path, iris_spec)
    code, out, _ = _main(["validate", spec, "--set", "data.batch_size=8"], capsys)
    assert code == 0
    result = json.loads(out.splitlines()[-1])
    assert result["valid"] is True
    assert result["features"] == {"dense_input": ["sepal_length", "sepal_width", "petal_length",
                                                  "petal_width"]}
    assert not os.path.exists(iris_spec["model_dir"] + "/checkpoint")


def test_schema_is_json_schema_of_the_spec(capsys):
    code, out, _ = _main(["schema"], capsys)
    schema = json.loads(out)
    assert code == 0
    assert {"model", "model_dir", "data", "train"} <= set(schema["required"])
    assert "export" in schema["properties"]


def test_help_is_fast_and_does_not_import_tensorflow():
    code = ("import sys, time; t = time.perf_counter(); from k2e_core import cli; "
            "import contextlib, io\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try: cli.main(['--help'])\n"
            "    except SystemExit: pass\n"
            "print('tensorflow' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "False", proc.stderr


DIVERGING = (
    "import tensorflow as tf\n"
    "def build():\n"
    "    tf.keras.utils.set_random_seed(1)\n"
    "    model = tf.keras.Sequential([tf.keras.layers.Dense(16, activation='relu', input_shape=(4,)),\n"
    "                                 tf.keras.layers.Dense(3)])\n"
    "    model.compile(optimizer=tf.keras.optimizers.SGD(1e12), metrics=['accuracy'],\n"
    "                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))\n"
    "    return model\n"
)


def test_a_diverging_run_exits_1_with_one_line_naming_the_step_and_causes(iris_spec, tmp_path,
                                                                            capsys):
    (tmp_path / "diverging.py").write_text(DIVERGING)
    spec = _write(tmp_path, dict(iris_spec, model={"factory": str(tmp_path / "diverging.py") + ":build"}))
    code, out, err = _main(["run", spec], capsys)
    assert code == 1
    problems = problem_lines(err)
    assert len(problems) == 1, err
    assert re.match(r"k2e: failed: training diverged: the loss is NaN at step \d+ .*lower the "
                    r"learning rate, or look for NaN/inf in the data", problems[0]), problems[0]
    assert "Model diverged" not in err and "Traceback" not in err
    assert not os.path.exists(iris_spec["export"]["base"])
    # Nothing trained on NaN was saved: the step-0 checkpoint is the latest.
    assert open(os.path.join(iris_spec["model_dir"], "checkpoint")).readline().strip() == \
        'model_checkpoint_path: "model.ckpt-0"'


UNCOMPILED = (
    "import tensorflow as tf\n"
    "def build():\n"
    "    return tf.keras.Sequential([tf.keras.layers.Dense(3, input_shape=(4,))])\n"
)


def _bad_inputs(tmp_path, iris_spec, example_data):
    (tmp_path / "uncompiled.py").write_text(UNCOMPILED)
    (tmp_path / "corrupt.keras").write_bytes(b"this is not a model")
    (tmp_path / "empty.csv").write_text("")
    cases = {
        "no model": ({"model": {}}, "model: no model source; set model.factory or model.path"),
        "both sources": ({"model": {"factory": "m.py:f", "path": "m.keras"}},
                         "model: both model.factory and model.path are set"),
        "uncompiled model": ({"model": {"factory": str(tmp_path / "uncompiled.py") + ":build"}},
                             "model.factory: the Keras model is not compiled"),
        "checkpoint format": ({"model": dict(iris_spec["model"], checkpoint_format="pickle")},
                              "model.checkpoint_format:"),
        "missing model file": ({"model": {"path": str(tmp_path / "nope.keras")}},
                               "model.path: no Keras model at"),
        "corrupt model file": ({"model": {"path": str(tmp_path / "corrupt.keras")}},
                               "model.path: cannot load a Keras model"),
        "missing data file": ({"data": dict(iris_spec["data"], train={"files": str(tmp_path / "x.csv")})},
                              "data.train.files: no file matches"),
        "empty data file": ({"data": dict(iris_spec["data"], train={"files": str(tmp_path / "empty.csv")})},
                            "data.train.files:"),
        "feature names": ({"data": dict(iris_spec["data"], features=None)},
                          "data.features: the model expects inputs ['dense_input'] but data.train files provide"),
        "label shape": ({"data": dict(iris_spec["data"], labels=["sepal_length", "sepal_width", "species"])},
                        "data.labels: labels of shape"),
        "wrong type": ({"train": {"steps": "many"}}, "train.steps:"),
        "unknown field": ({"train": {"steps": 10, "epochs": 3}}, "train.epochs: unknown field"),
        "steps <= 0": ({"train": {"steps": 0}}, "train.steps: Input should be greater than 0"),
        "checkpoint steps and secs": (
            {"run_config": {"save_checkpoints_steps": 100, "save_checkpoints_secs": 30}},
            "run_config: save_checkpoints_steps and save_checkpoints_secs are both set; keep one"),
    }
    return cases


@pytest.mark.parametrize("case", [
    "no model", "both sources", "uncompiled model", "checkpoint format", "missing model file",
    "corrupt model file", "missing data file", "empty data file", "feature names", "label shape",
    "wrong type", "unknown field", "steps <= 0", "checkpoint steps and secs",
])
def test_bad_input_gets_one_line_exit_2_and_nothing_published(case, iris_spec, example_data,
                                                               tmp_path, capsys):
    change, expected = _bad_inputs(tmp_path, iris_spec, example_data)[case]
    spec = copy.deepcopy(iris_spec)
    spec.update(change)
    spec = {k: v for k, v in spec.items() if v is not None}
    assert_refused(*_main(["run", _write(tmp_path, spec)], capsys), expected,
                   iris_spec["export"]["base"])


LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d k2e [DIWE] ")


def problem_lines(err: str) -> list[str]:
    """stderr without k2e's own log lines (progress, warnings): what the user must read."""
    return [line for line in err.strip().splitlines() if not LOG_LINE.match(line)]


def assert_refused(code, out, err, expected, export_base):
    """Exit 2, one line (besides k2e's progress log) naming `expected`, then the fix;
    nothing published, nothing on stdout."""
    lines = problem_lines(err)
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("k2e: error: " + expected), lines[0]
    assert ";" in lines[0]  # the fix follows the problem
    assert not os.path.exists(export_base)
    assert out == ""


def test_set_a_field_whose_sibling_has_a_default(iris_spec, tmp_path, capsys):
    """`--set run_config.save_checkpoints_steps=N` replaces the 60 s default; it used to be
    refused as if both had been set."""
    from k2e_core.spec import load_spec

    spec = _write(tmp_path, iris_spec)
    code, out, err = _main(["validate", spec, "--set", "run_config.save_checkpoints_steps=100"],
                           capsys)
    assert code == 0, err
    loaded = load_spec(load_spec(spec), ["run_config.save_checkpoints_steps=100"])
    assert (loaded.run_config.save_checkpoints_steps, loaded.run_config.save_checkpoints_secs) == (100, None)
