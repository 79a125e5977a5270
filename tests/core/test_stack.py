"""The import-time stack check, and what importing k2e costs."""

from __future__ import annotations

import subprocess
import sys


def test_wrong_keras_is_one_clear_sentence(monkeypatch):
    from k2e_core import versions

    real = versions.installed
    monkeypatch.setattr(
        versions, "installed", lambda name: "3.6.0" if name == "keras" else real(name)
    )
    problem = versions.stack_problem()
    assert "keras 3.6.0" in problem and "Keras 2.15" in problem and "Keras 3" in problem
    assert problem.count(".\n") == 0 and "\n" not in problem


def test_missing_tensorflow_is_named(monkeypatch):
    from k2e_core import versions

    real = versions.installed
    monkeypatch.setattr(
        versions, "installed", lambda name: None if name == "tensorflow" else real(name)
    )
    problem = versions.stack_problem()
    assert "has no TensorFlow" in problem and "k2e[keras]" in problem and "python=" in problem


def test_installed_stack_passes():
    from k2e_core import versions

    assert versions.stack_problem() is None
    assert versions.trainer_problem(versions.installed_trainer()) is None


def test_the_other_trainer_names_the_interpreter_that_has_it():
    from k2e_core import versions

    other = "keras" if versions.installed_trainer() == "estimator" else "estimator"
    problem = versions.trainer_problem(other)
    _, k2e, make, _ = versions.ENVIRONMENTS[other]
    assert f"the {other} trainer needs" in problem and sys.executable in problem
    assert k2e in problem and make in problem and "\n" not in problem


def test_importing_k2e_and_the_orchestrator_packages_does_not_import_tensorflow():
    code = (
        "import sys, k2e_core, k2e_core.spec, k2e_core.cli, airflow_plugin.operators.k2e, "
        "airflow_plugin.hooks.storage, kfp_components; "
        "print('tensorflow' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "False", proc.stderr


def test_a_spec_for_the_other_trainer_stops_in_one_line_naming_its_interpreter(tmp_path):
    """`trainer: keras` in the Estimator trainer's environment (or the other way round):
    exit 2 before anything runs, one line naming the interpreter that has that trainer."""
    import os

    from k2e_core import versions
    from tests.conftest import EXAMPLES

    other = "keras" if versions.installed_trainer() == "estimator" else "estimator"
    k2e = os.path.join(os.path.dirname(sys.executable), "k2e")
    proc = subprocess.run(
        [
            k2e, "run", os.path.join(EXAMPLES, "iris.yaml"),
            "--set", f"trainer={other}", "--set", f"model_dir={tmp_path / 'model'}",
        ],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stdout == ""
    line = proc.stderr.strip()
    assert "\n" not in line and line.startswith(f"k2e: error: trainer: the {other} trainer")
    assert versions.ENVIRONMENTS[other][1] in line
    assert not (tmp_path / "model").exists()
