"""The one TensorFlow stack k2e runs on, checked from package metadata (no TF import)."""

from __future__ import annotations

import sys
from importlib import metadata

REQUIRED = {"tensorflow": "2.15", "tensorflow-estimator": "2.15", "keras": "2.15"}
_TF_DISTRIBUTIONS = ("tensorflow-cpu", "tensorflow", "tensorflow-gpu", "tensorflow-intel")


def installed(name: str) -> str | None:
    names = _TF_DISTRIBUTIONS if name == "tensorflow" else (name,)
    for dist in names:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def stack_problem() -> str | None:
    """One sentence saying what is installed and what is needed, or None when all is well."""
    found = {name: installed(name) for name in REQUIRED}
    wrong = {
        name: version
        for name, version in found.items()
        if version is None or not version.startswith(REQUIRED[name] + ".")
    }
    if not wrong:
        return None
    have = ", ".join(f"{n} {v or 'not installed'}" for n, v in found.items())
    if found["tensorflow"] is None and sys.version_info[:2] != (3, 11):
        return (
            f"this k2e install has no TensorFlow (Python {sys.version.split()[0]}: the "
            "provider and adapters only); run TensorFlow steps with the Python 3.11 "
            "interpreter of a k2e[tensorflow] install (the operators' python=), or install "
            'it here on Python 3.11: pip install -c constraints.txt "k2e[tensorflow]"'
        )
    return (
        f"k2e needs TensorFlow 2.15 with tensorflow-estimator 2.15 and Keras 2.15 "
        f"(Keras 3 breaks tf.keras in TF 2.15), but this environment has {have}; "
        f'install k2e\'s pinned set: pip install -c constraints.txt "k2e[tensorflow]"'
    )


def check_stack() -> None:
    problem = stack_problem()
    if problem:
        raise ImportError(problem)
