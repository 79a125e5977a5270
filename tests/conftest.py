"""Shared fixtures: small generated data and the seed models, real TensorFlow throughout."""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
import sys

import numpy as np
import pytest
import requests

# As k2e does before it imports TensorFlow: test modules that import TensorFlow themselves are
# collected first, and TensorFlow's C++ warnings would otherwise reach the captured output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _trainer_tests() -> list[str]:
    """What this interpreter cannot run: the Keras trainer's tests need its stack (Python
    3.12, .venv-keras); everything else the Estimator trainer's (Python 3.11, .venv)."""
    from k2e_core import versions

    if versions.installed_trainer() == "keras":
        return [n for n in os.listdir(os.path.dirname(__file__)) if n not in ("keras_trainer",)]
    return ["keras_trainer"]


collect_ignore = _trainer_tests()
EXAMPLES = os.path.join(REPO, "examples")


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _k2e_logging():
    """`cli.main` points k2e's log handler at the calling test's captured stderr, which is
    closed after that test: every test gets k2e's logging back as it found it."""
    logger = logging.getLogger("k2e")
    saved = logger.handlers[:], logger.propagate, logger.level
    yield
    logger.handlers[:] = saved[0]
    logger.propagate = saved[1]
    logger.setLevel(saved[2])


@pytest.fixture(scope="session")
def tf():
    from k2e_core.estimator.compat import tf

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
    return iris_job(example_data, tmp_path)


def iris_job(example_data, root) -> dict:
    """The iris job's spec (CSV, 60 steps, evaluated once at the end), writing model_dir and
    export under `root`."""
    return {
        "model": {"factory": os.path.join(EXAMPLES, "models.py") + ":iris_model"},
        "model_dir": str(root / "model"),
        "data": {
            "train": {"files": str(example_data / "iris_train.csv")},
            "eval": {"files": str(example_data / "iris_test.csv")},
            "features": {
                "dense_input": ["sepal_length", "sepal_width", "petal_length", "petal_width"]
            },
            "labels": "species",
            "batch_size": 16,
        },
        "train": {"steps": 60},
        # one evaluation, after training: the default cadence (five) has tests of its own
        "eval": {"every_steps": "end"},
        "run_config": {"tf_random_seed": 1, "log_every_secs": 0.05},
        "export": {"base": str(root / "export")},
    }


def example_spec(name: str, factory: str, example_data, data: str) -> dict:
    """examples/<name>.yaml as it ships, its factory and its `data`'s train and test files
    (as the examples' generator names them) from this session's example data."""
    import yaml

    with open(os.path.join(EXAMPLES, f"{name}.yaml")) as f:
        spec = yaml.safe_load(f)
    ext = os.path.splitext(spec["data"]["train"]["files"])[1]
    spec["model"]["factory"] = os.path.join(EXAMPLES, "models.py") + f":{factory}"
    spec["data"]["train"]["files"] = str(example_data / f"{data}_train{ext}")
    spec["data"]["eval"]["files"] = str(example_data / f"{data}_test{ext}")
    return spec


@pytest.fixture
def retraining_spec(example_data, tmp_path):
    """examples/iris_retraining.yaml (gate, warm start, retention) writing into tmp_path;
    `retraining_day(spec, n)` gives the overrides of day n's run."""
    return retraining_job(example_data, tmp_path)


def retraining_job(example_data, root) -> dict:
    """examples/iris_retraining.yaml's day 1, writing its model_dir and export under `root`."""
    import yaml

    with open(os.path.join(EXAMPLES, "iris_retraining.yaml")) as f:
        spec = yaml.safe_load(f)
    spec["model"]["factory"] = os.path.join(EXAMPLES, "models.py") + ":iris_model"
    spec["data"]["eval"]["files"] = str(example_data / "retraining" / "eval.csv")
    spec["export"]["base"] = str(root / "models")
    spec["run_config"]["log_every_secs"] = 0.5
    from k2e_core.spec import apply_overrides

    return apply_overrides(spec, retraining_day(1, example_data, root))


def retraining_day(day, example_data, root) -> dict:
    """Overrides for day `day`'s run: its own model_dir and run id, that day's training data."""
    return {
        "model_dir": str(root / "runs" / f"day{day}"),
        "run_id": f"day{day}",
        "data.train.files": str(example_data / "retraining" / f"day{day}.csv"),
    }


def bn_data(rows=256, seed=0):
    rng = np.random.RandomState(seed)
    x = rng.normal(3, 2, (rows, 4)).astype("float32")
    y = (x.sum(1) > 12).astype("float32")
    return x, y


# --------------------------------------------------------------------------- S3
# A real S3-protocol endpoint: moto's standalone server, started on 127.0.0.1 and stopped at
# the end (s3fs's own test suite does the same); it is reset between tests.

BUCKET = "k2e-test"


def on_s3(spec: dict, s3: dict, **fields) -> dict:
    """`spec` with its model_dir and export base in a fresh folder of the S3 server, and its
    credentials left to the environment (as a Kubernetes Secret gives them); `fields` too."""
    import uuid

    root = f"s3://{BUCKET}/{uuid.uuid4().hex}"
    endpoint = {k: v for k, v in s3["s3"].items() if k not in ("key", "secret")}
    return {
        **spec,
        "model_dir": f"{root}/model",
        "export": {"base": f"{root}/export"},
        "storage": {"options": {"s3": endpoint}},
        **fields,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    def __init__(self):
        from moto.server import ThreadedMotoServer

        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.running = False

    def start(self):
        self._server.start()
        self.running = True

    def stop(self):
        if self.running:
            self._server.stop()
            self.running = False

    def reset(self):
        requests.post(f"{self.endpoint}/moto-api/reset", timeout=10)


@pytest.fixture(scope="session")
def s3_server():
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    env = {
        "AWS_ACCESS_KEY_ID": "k2e-test-key",
        "AWS_SECRET_ACCESS_KEY": "k2e-test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    server = S3Server()
    server.start()
    yield server
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def s3(s3_server):
    """A fresh bucket on the running server, and the storage options that reach it."""
    if not s3_server.running:
        s3_server.start()
    s3_server.reset()
    import s3fs

    # botocore and s3fs retry too; bounded here so that a stopped server fails fast in tests
    options = {
        "s3": {
            "endpoint_url": s3_server.endpoint,
            "key": "k2e-test-key",
            "secret": "k2e-test-secret",
            "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2},
        }
    }
    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem(**options["s3"])
    fs.mkdir(BUCKET)
    return options


def pytest_collection_modifyitems(config, items):
    """The slow end-to-end tests first: spread over the workers from the start, they overlap
    the many short ones instead of running last while the other workers idle."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
