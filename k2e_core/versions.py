"""The two TensorFlow stacks k2e trains on, one per trainer, checked from package metadata
(no TF import): the Estimator trainer's TensorFlow 2.15 (Python 3.11, constraints.txt) and
the Keras trainer's TensorFlow 2.21 with Keras 3 (Python 3.12, constraints-keras.txt)."""

from __future__ import annotations

import sys
from importlib import metadata

TRAINERS = ("estimator", "keras")
#: trainer -> {distribution: version prefix}
STACKS = {
    "estimator": {"tensorflow": "2.15.", "tensorflow-estimator": "2.15.", "keras": "2.15."},
    "keras": {"tensorflow": "2.21.", "keras": "3."},
}
#: Where each trainer's environment comes from (README, "Set-up").
ENVIRONMENTS = {
    "estimator": ("Python 3.11", ".venv/bin/k2e", "make venv", "constraints.txt"),
    "keras": ("Python 3.12", ".venv-keras/bin/k2e", "make venv-keras", "constraints-keras.txt"),
}
_TF_DISTRIBUTIONS = ("tensorflow-cpu", "tensorflow", "tensorflow-gpu", "tensorflow-intel")


def installed(name: str) -> str | None:
    names = _TF_DISTRIBUTIONS if name == "tensorflow" else (name,)
    for dist in names:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def _fits(trainer: str) -> bool:
    return all(
        (installed(name) or "").startswith(prefix) for name, prefix in STACKS[trainer].items()
    )


def installed_trainer() -> str | None:
    """The trainer whose stack this interpreter has, None for a TensorFlow-free install."""
    return next((t for t in TRAINERS if _fits(t)), None)


def _have() -> str:
    names = dict.fromkeys(n for stack in STACKS.values() for n in stack)
    return ", ".join(f"{n} {installed(n) or 'not installed'}" for n in names)


def trainer_problem(trainer: str) -> str | None:
    """One sentence saying why this interpreter cannot run `trainer`, naming the one that can;
    None when it can."""
    if _fits(trainer):
        return None
    python, k2e, make, lock = ENVIRONMENTS[trainer]
    stack = " with ".join(f"{n} {p}x" for n, p in STACKS[trainer].items())
    return (
        f"the {trainer} trainer needs {stack} ({python}), and this interpreter "
        f"({sys.executable}, Python {sys.version.split()[0]}) has {_have()}; run it with "
        f"{k2e} (built by {make}), or set the operators' python= to that interpreter, or "
        f'install it here: pip install -c {lock} "k2e[{_EXTRA[trainer]}]"'
    )


_EXTRA = {"estimator": "tensorflow", "keras": "keras"}


def stack_problem() -> str | None:
    """One sentence saying what is wrong, or None when a trainer's stack is installed."""
    if installed_trainer() is not None:
        return None
    if installed("tensorflow") is None:
        return (
            f"this k2e install has no TensorFlow (Python {sys.version.split()[0]}: the "
            "provider and adapters only); run TensorFlow steps with the interpreter of a "
            "k2e[tensorflow] install (Python 3.11, the Estimator trainer) or a k2e[keras] "
            "install (Python 3.12, the Keras trainer): the operators' python="
        )
    return (
        "k2e trains on TensorFlow 2.15 with tensorflow-estimator 2.15 and Keras 2.15 (the "
        "Estimator trainer), or on TensorFlow 2.21 with Keras 3 (the Keras trainer), but this "
        f"environment has {_have()}; install a pinned set: "
        'pip install -c constraints.txt "k2e[tensorflow]" (Python 3.11), or '
        'pip install -c constraints-keras.txt "k2e[keras]" (Python 3.12)'
    )


def check_stack(trainer: str | None = None) -> None:
    """Raises ImportError with one sentence where this interpreter lacks `trainer`'s stack
    (None: any trainer's)."""
    problem = stack_problem() if trainer is None else trainer_problem(trainer)
    if problem:
        raise ImportError(problem)
