"""The pieces a step opens its job from, each on its own: model_dir access, the Keras model,
the warm-start seeding, and the opened job with its plan and Estimator built on first use."""

from __future__ import annotations

import os

import fsspec
import numpy as np
import pytest

from k2e_core.distributed.cluster import Task
from k2e_core.errors import SpecError
from k2e_core.estimator import keras_model, warm_start
from k2e_core.objects import spec_custom_objects
from k2e_core.spec import load_spec
from k2e_core.steps import job
from k2e_core.steps import warm_start as sources
from k2e_core.steps.model_dir import ModelDir


def _files(root) -> dict:
    """{relative path: bytes} of every file under `root`."""
    found = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, root)] = f.read()
    return found


@pytest.fixture(scope="module")
def trained(example_data, tmp_path_factory):
    """A model_dir the iris job trained in (with its export base), read by the tests."""
    from tests.conftest import iris_job

    spec = iris_job(example_data, tmp_path_factory.mktemp("trained"))
    job.train_step(spec)
    return spec


# --------------------------------------------------------------------------- model_dir


def test_a_local_model_dir_that_a_step_trains_in_is_the_directory_itself(tmp_path):
    url = str(tmp_path / "new" / "model")
    opened = ModelDir.open(url, str(tmp_path / "staging"), "train")
    assert opened.path == url and os.path.isdir(url)
    assert opened.remote is None and opened.listeners() == []
    assert opened.checkpoint_url(os.path.join(url, "model.ckpt-5")) == os.path.join(
        url, "model.ckpt-5"
    )


def test_inspecting_a_model_dir_creates_nothing(tmp_path):
    url = str(tmp_path / "model")
    opened = ModelDir.open(url, str(tmp_path / "staging"), "inspect")
    assert not os.path.exists(url) and not opened.writable
    opened.sync()
    assert not os.path.exists(url)


def test_reading_a_model_dir_works_on_a_mirror_and_never_writes_back(trained, tmp_path):
    before = _files(trained["model_dir"])
    opened = ModelDir.open(trained["model_dir"], str(tmp_path), "read")
    assert opened.path.startswith(str(tmp_path))
    mirrored = _files(opened.path)
    assert "checkpoint" in mirrored and any(n.endswith(".index") for n in mirrored)
    with open(os.path.join(opened.path, "eval-written-here"), "w") as f:
        f.write("x")
    opened.sync()
    assert opened.listeners() == []
    assert _files(trained["model_dir"]) == before


def test_a_remote_model_dir_is_a_mirror_that_uploads_what_changed(trained, tmp_path):
    store = fsspec.filesystem("memory")
    url = "memory://pieces/remote-model"
    store.put(trained["model_dir"], url, recursive=True)
    opened = ModelDir.open(url, str(tmp_path), "train")
    assert opened.resume["files"] > 0 and opened.writable
    with open(os.path.join(opened.path, "events.out.tfevents.1"), "w") as f:
        f.write("event")
    opened.sync()
    assert store.cat(f"{url}/events.out.tfevents.1") == b"event"
    assert opened.checkpoint_url("/any/where/model.ckpt-60") == f"{url}/model.ckpt-60"
    assert len(opened.listeners()) == 1
    store.rm(url, recursive=True)


def test_inspecting_a_remote_model_dir_reads_only_its_records(trained, tmp_path):
    store = fsspec.filesystem("memory")
    url = "memory://pieces/inspected-model"
    store.put(trained["model_dir"], url, recursive=True)
    listing = sorted(store.find(url))
    opened = ModelDir.open(url, str(tmp_path), "inspect")
    fetched = sorted(_files(opened.path))
    assert fetched and all(n.startswith("keras/") and n.endswith(".json") for n in fetched)
    assert sorted(store.find(url)) == listing
    store.rm(url, recursive=True)


def test_the_chief_of_a_cluster_refills_the_shared_copy_from_the_store(
    trained, tmp_path, monkeypatch
):
    monkeypatch.setenv("K2E_SHARED_DIR", str(tmp_path / "shared"))
    store = fsspec.filesystem("memory")
    url = "memory://pieces/cluster-model"
    store.put(trained["model_dir"], url, recursive=True)
    cluster = {"chief": ["localhost:1"], "worker": ["localhost:2"]}
    worker = ModelDir.open(url, str(tmp_path / "w"), "train", Task("worker", 0, cluster))
    leftover = os.path.join(worker.path, "model.ckpt-999.index")
    with open(leftover, "w") as f:
        f.write("from a killed run")
    assert worker.remote is None  # workers never upload: the chief does
    chief = ModelDir.open(url, str(tmp_path / "c"), "train", Task("chief", 0, cluster))
    assert chief.path == worker.path and not os.path.exists(leftover)
    assert "checkpoint" in _files(chief.path)
    store.rm(url, recursive=True)


# --------------------------------------------------------------------------- the Keras model


def test_an_uncompiled_model_is_refused_naming_the_factory(example_data, tmp_path):
    module = tmp_path / "plain.py"
    module.write_text(
        "import tensorflow as tf\n"
        "def model():\n"
        "    return tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(3)])\n"
    )
    spec = _iris(example_data, tmp_path, model={"factory": f"{module}:model"})
    with pytest.raises(SpecError, match="not compiled") as caught:
        keras_model.load(spec, spec_custom_objects(spec))
    assert caught.value.field == "model.factory"


# --------------------------------------------------------------------------- warm start


def _iris(example_data, root, **changes):
    from tests.conftest import iris_job

    return load_spec({**iris_job(example_data, root), **changes})


def _model(spec):
    return keras_model.load(spec, spec_custom_objects(spec))


def test_seeding_puts_the_sources_weights_into_the_model_and_records_them(
    trained, example_data, tmp_path
):
    spec = _iris(
        example_data, tmp_path, warm_start=trained["model_dir"], run_config={"tf_random_seed": 7}
    )
    model = _model(spec)
    own = model.get_weights()
    os.makedirs(spec.model_dir)
    seeded = warm_start.seed(model, spec.model_dir, spec, str(tmp_path / "staging"))
    assert seeded.record["from"] == "checkpoint"
    assert seeded.record["url"].endswith("model.ckpt-60")
    assert sources.load_record(spec.model_dir) == seeded.record
    assert any(not np.array_equal(a, b) for a, b in zip(own, model.get_weights()))
    assert seeded.optimizer_state is not None  # Adam's moments come with the weights


def test_seeding_a_model_dir_that_holds_training_checkpoints_applies_nothing(
    trained, example_data, tmp_path
):
    spec = load_spec({**trained, "warm_start": trained["model_dir"]})
    model = _model(spec)
    own = model.get_weights()
    seeded = warm_start.seed(model, spec.model_dir, spec, str(tmp_path))
    assert all(np.array_equal(a, b) for a, b in zip(own, model.get_weights()))
    assert seeded.optimizer_state is None


def test_without_a_source_seeding_keeps_the_models_own_weights(example_data, tmp_path):
    spec = _iris(example_data, tmp_path)
    model = _model(spec)
    own = model.get_weights()
    os.makedirs(spec.model_dir)
    seeded = warm_start.seed(model, spec.model_dir, spec, str(tmp_path / "staging"))
    assert seeded == warm_start.Seed()
    assert all(np.array_equal(a, b) for a, b in zip(own, model.get_weights()))
    assert sources.load_record(spec.model_dir) is None


# --------------------------------------------------------------------------- the opened job


def test_an_opened_job_builds_its_estimator_and_plan_once_on_first_use(trained):
    with job.open_job(trained, access="read") as opened:
        assert len(opened.run_id()) == len("ckpt-") + 16  # no convert() needed first
        assert opened.trainer.estimator is opened.trainer.estimator
        assert opened.data.plan is opened.data.plan
        assert opened.trainer.latest_checkpoint().endswith("model.ckpt-60")


def test_validate_writes_nothing_and_fetches_no_warm_start(trained, example_data, tmp_path):
    spec = _iris(example_data, tmp_path, warm_start=trained["model_dir"])
    source = _files(trained["model_dir"])
    result = job.validate(spec)
    assert result["valid"] is True
    assert not os.path.exists(spec.model_dir) and not os.path.exists(spec.export.base)
    assert _files(trained["model_dir"]) == source


def test_validate_still_names_a_warm_start_source_that_is_not_there(example_data, tmp_path):
    spec = _iris(example_data, tmp_path, warm_start=str(tmp_path / "nothing-here"))
    with pytest.raises(SpecError, match="no checkpoint at") as caught:
        job.validate(spec)
    assert caught.value.field == "warm_start"
    assert not os.path.exists(spec.model_dir)
