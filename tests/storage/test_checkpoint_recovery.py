"""A model_dir whose state file is lost or garbled, or whose newest checkpoint is damaged,
resumes from the newest checkpoint that reads and says so, on every back end; it never
starts over from step 0 while checkpoints exist."""

from __future__ import annotations

import logging

import numpy as np

from k2e_core import storage
from k2e_core.steps import job
from k2e_core.storage.checkpoints import latest_checkpoint_name


def _spec(iris_spec, location):
    base, options = location
    return dict(
        iris_spec,
        model_dir=storage.join(base, "model"),
        storage={"options": options},
        run_config={"tf_random_seed": 1, "save_checkpoints_steps": 10, "log_every_secs": 60},
    )


def _train(spec, steps):
    return job.train_step(spec, [f"train.steps={steps}"])


def _state_names(spec) -> str | None:
    with storage.configured(spec["storage"]["options"]):
        return latest_checkpoint_name(
            storage.read_bytes(storage.join(spec["model_dir"], "checkpoint")).decode()
        )


def _warnings(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and r.name.startswith("k2e")
    ]


def test_a_lost_or_garbled_state_file_resumes_from_the_newest_checkpoint(
    location, iris_spec, caplog
):
    spec = _spec(iris_spec, location)
    assert _train(spec, 30)["global_step"] == 30
    state = storage.join(spec["model_dir"], "checkpoint")
    with storage.configured(spec["storage"]["options"]):
        storage.remove(state)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="k2e"):
        result = _train(spec, 40)
    assert (result["global_step"], result["steps_trained"]) == (40, 10)
    assert any(
        "has no checkpoint state file; continuing from model.ckpt-30" in w
        for w in _warnings(caplog)
    )
    assert _state_names(spec) == "model.ckpt-40"

    with storage.configured(spec["storage"]["options"]):
        storage.write_bytes(state, np.random.default_rng(0).bytes(300))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="k2e"):
        result = _train(spec, 50)
    assert (result["global_step"], result["steps_trained"]) == (50, 10)
    assert any(
        "checkpoint is unreadable; continuing from model.ckpt-40" in w for w in _warnings(caplog)
    )
    assert _state_names(spec) == "model.ckpt-50"


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(location, iris_spec, caplog):
    spec = _spec(iris_spec, location)
    assert _train(spec, 30)["global_step"] == 30
    with storage.configured(spec["storage"]["options"]):
        shards = [
            url for url in storage.glob(storage.join(spec["model_dir"], "model.ckpt-30.data-*"))
        ]
        for url in shards:
            storage.write_bytes(url, np.random.default_rng(1).bytes(len(storage.read_bytes(url))))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="k2e"):
        evaluated = job.evaluate_step(spec)
    assert evaluated["global_step"] == 20  # measured on the checkpoint that reads
    warned = _warnings(caplog)
    assert any(
        "model.ckpt-30 in" in w
        and "does not read (its data fails its checksum); continuing from model.ckpt-20" in w
        for w in warned
    ), warned

    result = _train(spec, 40)
    assert (result["global_step"], result["steps_trained"]) == (40, 20)
    assert _state_names(spec) == "model.ckpt-40"
