"""Shared fixtures: small generated data and the seed models, real TensorFlow throughout."""

from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(REPO, "examples")


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tf():
    from k2e_core._tensorflow import tf

    return tf


@pytest.fixture(scope="session")
def example_models(tf):
    return _load("k2e_example_models", os.path.join(EXAMPLES, "models.py"))


@pytest.fixture(scope="session")
def gen():
    return _load("k2e_example_data", os.path.join(EXAMPLES, "generate_data.py"))


@pytest.fixture(scope="session")
def example_data(tmp_path_factory, gen, tf):
    """The examples' data sets, generated once per test session."""
    out = tmp_path_factory.mktemp("example-data")
    gen.main(str(out))
    return out


@pytest.fixture
def iris_spec(example_data, tmp_path):
    """A small iris job (CSV) writing into tmp_path."""
    return {
        "model": {"factory": os.path.join(EXAMPLES, "models.py") + ":iris_model"},
        "model_dir": str(tmp_path / "model"),
        "data": {
            "train": {"files": str(example_data / "iris_train.csv")},
            "eval": {"files": str(example_data / "iris_test.csv")},
            "features": {"dense_input": ["sepal_length", "sepal_width", "petal_length", "petal_width"]},
            "labels": "species",
            "batch_size": 16,
        },
        "train": {"steps": 60},
        "run_config": {"tf_random_seed": 1, "log_every_secs": 0.05},
        "export": {"base": str(tmp_path / "export")},
    }


def bn_data(rows=256, seed=0):
    rng = np.random.RandomState(seed)
    x = rng.normal(3, 2, (rows, 4)).astype("float32")
    y = (x.sum(1) > 12).astype("float32")
    return x, y
