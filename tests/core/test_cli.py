"""The `k2e` command: results, overrides, schema, and one-line errors for bad input."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import yaml

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
    proc = subprocess.run(
        [K2E, "run", spec, "--set", "train.steps=40"], capture_output=True, text=True, timeout=300
    )
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
    assert result["features"] == {
        "dense_input": ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    }
    assert not os.path.exists(iris_spec["model_dir"] + "/checkpoint")


def test_schema_is_json_schema_of_the_spec(capsys):
    code, out, _ = _main(["schema"], capsys)
    schema = json.loads(out)
    assert code == 0
    assert {"model", "model_dir", "data", "train"} <= set(schema["required"])
    assert "export" in schema["properties"]


def test_help_is_fast_and_does_not_import_tensorflow():
    code = (
        "import sys, time; t = time.perf_counter(); from k2e_core import cli; "
        "import contextlib, io\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try: cli.main(['--help'])\n"
        "    except SystemExit: pass\n"
        "print('tensorflow' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "False", proc.stderr


DIVERGING = (
    "import tensorflow as tf\n"
    "def build():\n"
    "    tf.keras.utils.set_random_seed(1)\n"
    "    model = tf.keras.Sequential([\n"
    "        tf.keras.layers.Dense(16, activation='relu', input_shape=(4,)),\n"
    "        tf.keras.layers.Dropout(0.2), tf.keras.layers.Dense(3)])\n"
    "    model.compile(optimizer=tf.keras.optimizers.OPTIMIZER, metrics=['accuracy'],\n"
    "                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))\n"
    "    return model\n"
).replace("OPTIMIZER", "Adam(1e30)")


def test_a_diverging_run_exits_3_with_one_line_naming_the_step_and_causes(
    iris_spec, tmp_path, capsys
):
    """3: a failure that a rerun would repeat (orchestrators do not retry it)."""
    (tmp_path / "diverging.py").write_text(DIVERGING)
    spec = _write(
        tmp_path, dict(iris_spec, model={"factory": str(tmp_path / "diverging.py") + ":build"})
    )
    code, out, err = _main(["run", spec], capsys)
    assert code == 3
    problems = problem_lines(err)
    assert len(problems) == 1, err
    assert re.match(
        r"k2e: failed: training diverged: the loss is NaN at step \d+ .*lower the "
        r"learning rate, or look for NaN/inf in the data",
        problems[0],
    ), problems[0]
    assert "Model diverged" not in err and "Traceback" not in err
    assert not os.path.exists(iris_spec["export"]["base"])
    # Nothing trained on NaN was saved: the step-0 checkpoint is the latest.
    assert (
        open(os.path.join(iris_spec["model_dir"], "checkpoint")).readline().strip()
        == 'model_checkpoint_path: "model.ckpt-0"'
    )


LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d k2e [DIWE] ")


def problem_lines(err: str) -> list[str]:
    """stderr without k2e's own log lines (progress, warnings): what the user must read."""
    return [line for line in err.strip().splitlines() if not LOG_LINE.match(line)]


def test_set_a_field_whose_sibling_has_a_default(iris_spec, tmp_path, capsys):
    """`--set run_config.save_checkpoints_steps=N` replaces the 60 s default; it used to be
    refused as if both had been set."""
    from k2e_core.spec import load_spec

    spec = _write(tmp_path, iris_spec)
    code, out, err = _main(
        ["validate", spec, "--set", "run_config.save_checkpoints_steps=100"], capsys
    )
    assert code == 0, err
    loaded = load_spec(load_spec(spec), ["run_config.save_checkpoints_steps=100"])
    assert (loaded.run_config.save_checkpoints_steps, loaded.run_config.save_checkpoints_secs) == (
        100,
        None,
    )
