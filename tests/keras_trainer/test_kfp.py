"""The same KFP components and pipelines on the Keras trainer: what its image runs
(`docker build --build-arg TRAINER=keras`: this environment's pins), here under KFP's local
runner in this interpreter."""

from __future__ import annotations

import json
import os

import pytest

from tests.keras_trainer.conftest import signature_defs

pytestmark = pytest.mark.slow


def test_the_job_pipeline_trains_and_publishes_on_the_keras_trainer(iris_spec, tmp_path):
    from kfp import local

    from kfp_components.pipelines import job_pipeline

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    base = str(tmp_path / "serving")
    spec = json.dumps({**iris_spec, "trainer": "keras"})
    outputs = job_pipeline(spec=spec, train_steps=60, export_base=base).outputs
    assert outputs["blessed"] is True and outputs["export_path"] == os.path.join(base, "1")
    with open(os.path.join(base, "1", "k2e-manifest.json")) as f:
        manifest = json.load(f)
    assert "fingerprint.pb" in manifest["files"]  # written by TensorFlow 2.21
    assert outputs["metrics"].metadata["accuracy"] == manifest["metrics"]["accuracy"]
    assert outputs["checkpoints"].metadata["global_step"] == 60
    assert os.path.exists(os.path.join(outputs["checkpoints"].path, "model.ckpt-60.index"))
    assert signature_defs(outputs["model"].path)["serving_default"][1] == ["dense_input"]
    report = outputs["report"]
    with open(report.path) as f:
        page = f.read()
    assert page.startswith("<!DOCTYPE html>") and "Confusion matrix" in page
