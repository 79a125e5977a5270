"""Typed records and results: what a published job leaves in its store and what every step
returns read back through the models in k2e_core.records, and `k2e schema` printing them."""

from __future__ import annotations

import glob
import json
import os

import pytest
from pydantic import ValidationError

from k2e_core import records
from k2e_core.steps import job
from tests.core.test_cli import _main


@pytest.fixture(scope="module")
def published(example_data, tmp_path_factory):
    from tests.conftest import iris_job

    root = tmp_path_factory.mktemp("published")
    spec = iris_job(example_data, root)
    first = job.run(spec)
    warm = dict(spec, model_dir=str(root / "again"), warm_start="latest", run_id="again")
    warm["gate"] = {"metrics": {"accuracy": {"tolerance": 1.0}}}
    return spec, first, job.run(warm)


def test_what_a_published_job_leaves_in_the_store_reads_as_its_records(published):
    spec, first, second = published
    version = second["export_path"]
    with open(os.path.join(version, "k2e-manifest.json")) as f:
        manifest = records.Manifest.model_validate(json.load(f))
    assert manifest.version == 2 and "saved_model.pb" in manifest.files
    with open(os.path.join(version, "k2e-record.json")) as f:
        record = records.VersionRecord.model_validate(json.load(f))
    assert record.warm_start.from_ == "latest" and record.warm_start.version == 1
    assert record.blessed and record.history[0].action == "blessed"
    (decision_file,) = glob.glob(os.path.join(spec["export"]["base"], ".k2e/decisions/again*"))
    with open(decision_file) as f:
        decision = records.GateDecision.model_validate(json.load(f))
    assert decision.baseline.version == 1
    assert [c.metric for c in decision.checks] == ["accuracy"]
    assert decision.checks[0].baseline == 1


def test_every_step_returns_exactly_its_result_models_keys(published, iris_spec):
    _, first, second = published
    for result in (first, second):
        assert set(result) <= set(records.RunResult.model_fields)
        assert records.RunResult.model_validate(result).train.global_step == 60
    steps = [
        (records.ValidateResult, job.validate),
        (records.ConvertResult, job.convert_step),
        (records.TrainResult, job.train_step),
        (records.EvaluateResult, job.evaluate_step),
        (records.ExportResult, job.export_step),
    ]
    for model, step in steps:
        result = step(iris_spec)
        assert set(result) <= set(model.model_fields), step.__name__
        assert json.loads(json.dumps(result)) == records.as_result(model, result)


def test_a_result_with_a_key_no_model_names_is_refused():
    with pytest.raises(ValidationError, match="blesed"):
        records.as_result(
            records.EvaluateResult,
            {"metrics": {}, "checkpoint": None, "global_step": 1, "blesed": True},
        )


@pytest.mark.parametrize(
    "name, required",
    [
        ("spec", {"model", "model_dir", "data"}),
        ("decision", {"blessed", "reason", "checks", "metrics", "eval_data"}),
        ("warm-start", {"from", "url"}),
        ("version", {"format", "metrics", "blessed", "history"}),
        ("manifest", {"format", "files"}),
        ("run", {"export_base", "blessed", "gate", "train", "metrics"}),
    ],
)
def test_k2e_schema_prints_the_spec_and_each_record(name, required, capsys):
    code, out, _ = _main(["schema", name], capsys)
    assert code == 0
    assert required <= set(json.loads(out)["required"])


def test_k2e_schema_of_an_unknown_record_names_the_choices(capsys):
    with pytest.raises(SystemExit) as exited:
        _main(["schema", "manifests"], capsys)
    assert exited.value.code == 2
    assert "invalid choice: 'manifests'" in capsys.readouterr().err
