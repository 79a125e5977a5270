"""k2e core: compiled Keras models trained and shipped as TensorFlow Estimators.

TensorFlow is imported on first use of a function that needs it, after a check of the
installed stack (package metadata) that names what is wrong in one sentence. The spec and
the CLI's argument handling work without TensorFlow.
"""

__version__ = "0.1.0"

_LAZY = {
    "convert": "k2e_core.estimator.conversion",
    "model_to_estimator": "k2e_core.estimator.conversion",
    "load_keras_model": "k2e_core.estimator.model_files",
    "JobSpec": "k2e_core.spec",
    "load_spec": "k2e_core.spec",
    "run": "k2e_core.steps.job",
    "validate": "k2e_core.steps.job",
    "convert_step": "k2e_core.steps.job",
    "train_step": "k2e_core.steps.job",
    "evaluate_step": "k2e_core.steps.job",
    "export_step": "k2e_core.steps.job",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'k2e_core' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
