"""The layout the README draws: TensorFlow only in the trainers (k2e_core.estimator,
k2e_core.keras_trainer), the data layer they share (k2e_core.inputs) and the steps that use
them; TensorFlow's, Keras' and the Estimator's private APIs only in each trainer's compat
module."""

from __future__ import annotations

import ast
import json
import os
import pkgutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("k2e_core", "airflow_plugin", "kfp_components")
# Modules that import TensorFlow: the trainers, the data layer, and the steps built on them.
USES_TENSORFLOW = (
    "k2e_core.estimator.",
    "k2e_core.keras_trainer",
    "k2e_core.inputs",
    "k2e_core.tf_runtime",
    "k2e_core.signatures",
    "k2e_core.storage.checkpoints",
    "k2e_core.steps.job",
    "k2e_core.steps.model_dir",
    "k2e_core.steps.warm_start",
)
COMPATS = (
    os.path.join("k2e_core", "estimator", "compat.py"),
    os.path.join("k2e_core", "keras_trainer", "compat.py"),
)
#: Where TensorFlow and Keras are imported by name: the trainers, and the one module that
#: loads TensorFlow for the rest (logs.py's progress_hook, a SessionRunHook, when called).
IMPORTS_TENSORFLOW = (
    os.path.join("k2e_core", "estimator"),
    os.path.join("k2e_core", "keras_trainer"),
    os.path.join("k2e_core", "tf_runtime.py"),
    os.path.join("k2e_core", "logs.py"),
)
PRIVATE_MODULES = ("keras.src", "tensorflow.python", "tensorflow_estimator.python")


def _modules() -> list[str]:
    names = []
    for package in PACKAGES:
        names.append(package)
        path = [os.path.join(REPO, package)]
        names += [m.name for m in pkgutil.walk_packages(path, package + ".")]
    return sorted(names)


def _sources():
    for folder in PACKAGES:
        for root, _, files in os.walk(os.path.join(REPO, folder)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(root, name)
                    yield os.path.relpath(path, REPO), ast.parse(open(path).read())


def test_every_module_outside_the_estimator_imports_without_tensorflow():
    free = [m for m in _modules() if not m.startswith(USES_TENSORFLOW)]
    assert "k2e_core.spec" in free and "k2e_core.distributed.tfjob" in free
    assert "k2e_core.trainer" in free and "k2e_core.stopping" in free
    assert "airflow_plugin.operators.k2e" in free and "kfp_components.pipelines" in free
    code = (
        "import importlib, json, sys\n"
        f"for name in {free!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(m for m in ('tensorflow', 'keras', 'tensorflow_estimator', "
        "'k2e_core.estimator.compat') if m in sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def _imported(tree) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append(node.module)
    return found


def test_only_the_trainers_import_tensorflow_by_name():
    for path, tree in _sources():
        if path.startswith(IMPORTS_TENSORFLOW):
            continue
        outside = [
            m
            for m in _imported(tree)
            if m.split(".")[0] in ("tensorflow", "keras", "tensorflow_estimator")
        ]
        assert outside == [], path


def _own(value) -> bool:
    """`self`, `cls` or `super()`: a class reaching its own private attributes."""
    if isinstance(value, ast.Call):
        return isinstance(value.func, ast.Name) and value.func.id == "super"
    return isinstance(value, ast.Name) and value.id in ("self", "cls")


def test_private_tensorflow_apis_are_used_in_the_compat_module_only():
    for path, tree in _sources():
        if path in COMPATS:
            continue
        private = [m for m in _imported(tree) if m.startswith(PRIVATE_MODULES)]
        assert private == [], path
        reached = sorted(
            {
                node.attr
                for node in ast.walk(tree)
                if isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith(("__", "_k2e"))
                and not _own(node.value)
            }
        )
        assert reached == [], f"{path} reaches into private attributes: {reached}"


@pytest.mark.parametrize("name", ["__internal__"])
def test_tensorflows_internal_namespace_is_used_in_the_compat_module_only(name):
    for path, tree in _sources():
        if path not in COMPATS:
            used = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == name]
            assert used == [], path
