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
