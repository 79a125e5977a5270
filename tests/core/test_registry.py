"""Scheduled retraining on plain storage: the registry, the gate and retention."""

from __future__ import annotations

import json
import os

import pytest
import yaml

from tests.conftest import BUCKET, retraining_day


def _cli(args, capsys):
    from k2e_core.cli import main

    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def _sets(overrides: dict) -> list[str]:
    return [arg for key, value in overrides.items() for arg in ("--set", f"{key}={value}")]


@pytest.mark.slow
def test_three_scheduled_runs_from_the_cli(retraining_spec, example_data, tmp_path, capsys):
    """Day 1 is published with no baseline; day 2 warm-starts from it and is published as
    better; day 3's drifted data makes a worse model, which is kept but not served."""
    spec = tmp_path / "retraining.yaml"
    spec.write_text(yaml.safe_dump(retraining_spec))
    base = retraining_spec["export"]["base"]

    def day(n, *extra):
        code, out, err = _cli(
            ["run", str(spec), *_sets(retraining_day(n, example_data, tmp_path)), *extra], capsys
        )
        assert code == 0, err
        return json.loads(out.strip().splitlines()[-1]), err

    (first, _), (second, _), (third, _) = day(1), day(2), day(3)
    assert first["blessed"] and first["version"] == 1 and first["gate"]["baseline"] is None
    assert "no blessed baseline yet: judged on thresholds alone" in first["reason"]

    assert second["blessed"] and second["version"] == 2
    assert second["warm_start"]["version"] == 1
    baseline = second["gate"]["baseline"]
    assert baseline["version"] == 1
    # The baseline was measured again, on the same eval data: it scores what it scored.
    assert baseline["metrics"]["accuracy"] == pytest.approx(first["metrics"]["accuracy"])
    assert second["metrics"]["accuracy"] > baseline["metrics"]["accuracy"]

    assert not third["blessed"] and third["version"] is None and third["export_path"] is None
    assert third["warm_start"]["version"] == 2
    assert "(baseline version 2:" in third["reason"] and "accuracy" in third["reason"]
    assert os.path.isfile(os.path.join(third["candidate_path"], "saved_model.pb"))
    assert sorted(n for n in os.listdir(base) if not n.startswith(".")) == ["1", "2", "candidates"]

    code, out, _ = _cli(["registry", "list", str(spec)], capsys)
    rows = [line.split() for line in out.strip().splitlines()]
    assert code == 0 and rows[0][:3] == ["name", "blessed", "pinned"]
    assert [(r[0], r[1]) for r in rows[1:]] == [
        ("1", "yes"),
        ("2", "yes"),
        ("candidates/day3", "no"),
    ]
    code, out, _ = _cli(["registry", "latest", base], capsys)
    assert json.loads(out)["version"] == 2

    # The same logical run retried: the same decision, and nothing new.
    again, err = day(3)
    assert not again["blessed"] and again["reused"] and again["reason"] == third["reason"]
    assert "was decided before" in err
    assert sorted(os.listdir(os.path.join(base, "candidates"))) == ["day3"]

    # A forced bless is possible, and the record says so.
    forced, _ = day(3, "--set", "gate.force=drift confirmed as the new normal")
    assert forced["blessed"] and forced["version"] == 3
    with open(os.path.join(forced["export_path"], "k2e-record.json")) as f:
        record = json.load(f)
    assert record["by"] == "forced" and record["reason"].startswith("forced: drift confirmed")
    assert "checks failed: accuracy" in record["reason"] and record["gate"]["passed"] is False
    assert record["eval_data"]["files"] == [retraining_spec["data"]["eval"]["files"]]


def _version(tmp_path, name="saved") -> str:
    """A stand-in SavedModel directory: the registry never looks inside."""
    path = tmp_path / name
    (path / "variables").mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(b"pb " + name.encode())
    (path / "variables" / "variables.index").write_bytes(b"index")
    return str(path)


def _decision(run_id, blessed, reason="accuracy 0.9 >= 0.8"):
    return {
        "run_id": run_id,
        "metrics": {"accuracy": 0.9},
        "eval_data": {"files": ["eval.csv"]},
        "passed": blessed,
        "checks": [],
        "baseline": None,
        "blessed": blessed,
        "by": "gate",
        "reason": reason,
        "decided_at": "2026-11-20T00:00:00+00:00",
    }


def _add(base, local, run_id, blessed=True):
    from k2e_core import registry
    from k2e_core.storage import publish

    record = registry.new_record(_decision(run_id, blessed), {"model_dir": "m", "global_step": 1})
    keep = publish.publish if blessed else publish.keep_candidate
    return keep(local, base, run_id, metrics={"accuracy": 0.9}, record=record)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_bless_unbless_promote_pin_and_retention_by_hand(tmp_path, where, request):
    from k2e_core import registry, storage
    from k2e_core.errors import SpecError

    options = request.getfixturevalue("s3") if where == "s3" else {}
    base = f"s3://{BUCKET}/registry/{tmp_path.name}" if where == "s3" else str(tmp_path / "models")
    local = _version(tmp_path)
    with storage.configured(options):
        for run in ("r1", "r2", "r3"):
            _add(base, local, run)
        _add(base, local, "r4", blessed=False)
        assert registry.latest_blessed(base)["version"] == 3

        unblessed = registry.unbless(base, "3", "wrong labels upstream")
        assert (
            not unblessed["blessed"]
            and unblessed["history"][-1]["reason"] == "wrong labels upstream"
        )
        assert registry.latest_blessed(base)["version"] == 2
        with pytest.raises(SpecError, match="--reason: is required"):
            registry.bless(base, "3", "")

        promoted = registry.bless(base, "candidates/r4", "checked by hand")
        assert promoted["version"] == 4 and promoted["by"] == "hand"
        assert promoted["promoted_from"] == "candidates/r4"
        assert [h["action"] for h in promoted["history"]] == ["not blessed", "blessed"]
        assert [e["name"] for e in registry.entries(base)] == ["1", "2", "3", "4"]

        registry.pin(base, "1", True, "first production model")
        removed = registry.prune(base, keep=1)
        # 4 is the newest and the latest blessed; 1 is pinned.
        assert removed == ["2", "3"]
        assert [(e["name"], e["pinned"]) for e in registry.entries(base)] == [
            ("1", True),
            ("4", False),
        ]

        registry.unbless(base, "4", "rollback")
        assert registry.prune(base, keep=1) == []  # 1 is pinned, and now the latest blessed too
        with pytest.raises(SpecError, match="'9' is not a version or candidate"):
            registry.bless(base, "9", "x")


def test_retention_runs_after_each_publish(iris_spec):
    from k2e_core import registry
    from k2e_core.steps import job

    spec = {**iris_spec, "export": {**iris_spec["export"], "keep": 2}, "train": {"steps": 10}}
    for step in (10, 20, 30):
        result = job.run(spec, {"train.steps": step})
    assert result["version"] == 3 and result["pruned"] == ["1"]
    assert [e["name"] for e in registry.entries(spec["export"]["base"])] == ["2", "3"]


def test_the_gate_names_unknown_metrics_and_publishes_nothing(iris_spec):
    from k2e_core.errors import SpecError
    from k2e_core.steps import job

    spec = {**iris_spec, "gate": {"metrics": {"acc": {"at_least": 0.5}}}}
    with pytest.raises(
        SpecError,
        match=r"gate.metrics.acc: the evaluation reports no such "
        r"metric; use one of \['accuracy', 'global_step', 'loss'\]",
    ):
        job.run(spec)
    assert not os.path.exists(spec["export"]["base"]) or not [
        n for n in os.listdir(spec["export"]["base"]) if not n.startswith(".")
    ]


def _Rule(**fields):
    from k2e_core.spec import GateMetric

    return GateMetric(**fields)


def _Gate(metrics, baseline="latest_blessed", force=None):
    from k2e_core.spec import GateSpec

    return GateSpec(metrics=metrics, baseline=baseline, force=force)


LINEAR = {"estimator": "LinearClassifier", "metrics": {"accuracy": 0.9, "loss": 0.3}}


@pytest.mark.parametrize(
    "rules, metrics, baseline, premade, blessed, reason",
    [
        ({}, {"loss": 1.0}, None, None, True, "no gate metrics set"),
        (
            {"accuracy": _Rule(at_least=0.9)},
            {"accuracy": 0.95},
            None,
            None,
            True,
            "accuracy 0.95 >= 0.9; no blessed baseline yet: judged on thresholds alone",
        ),
        (
            {"accuracy": _Rule(at_least=0.9)},
            {"accuracy": 0.85},
            None,
            None,
            False,
            "accuracy 0.85 < 0.9",
        ),
        (
            {"loss": _Rule(tolerance=0.05)},
            {"loss": 0.52},
            {"version": 4, "metrics": {"loss": 0.5}},
            None,
            True,
            "loss 0.52 <= 0.55 (baseline version 4: 0.5, with tolerance)",
        ),
        (
            {"loss": _Rule(tolerance=0.01)},
            {"loss": 0.52},
            {"version": 4, "metrics": {"loss": 0.5}},
            None,
            False,
            "loss 0.52 > 0.51 (baseline version 4: 0.5, with tolerance)",
        ),
        (
            {"auc": _Rule(tolerance=None)},
            {"auc": 0.5},
            {"version": 4, "metrics": {"auc": 0.9}},
            None,
            True,
            "no checks apply",
        ),
        (
            {"auc": _Rule()},
            {"auc": 0.9},
            {"version": 4, "error": "does not fit this model"},
            None,
            False,
            "baseline version 4 could not be measured (does not fit this model)",
        ),
        (
            {"accuracy": _Rule(tolerance=None, vs_baseline={})},
            {"accuracy": 0.8},
            None,
            LINEAR,
            False,
            "accuracy 0.8 < 0.9 (pre-made baseline LinearClassifier: 0.9, with tolerance)",
        ),
        (
            {"accuracy": _Rule(tolerance=None, vs_baseline={"tolerance": 0.15})},
            {"accuracy": 0.8},
            None,
            LINEAR,
            True,
            "accuracy 0.8 >= 0.75 (pre-made baseline LinearClassifier: 0.9, with tolerance)",
        ),
        (
            {"xent": _Rule(tolerance=None, better="lower", vs_baseline={"metric": "loss"})},
            {"xent": 0.2},
            None,
            LINEAR,
            True,
            "xent 0.2 <= 0.3 (pre-made baseline LinearClassifier: 0.3, with tolerance)",
        ),
        (
            {"auc": _Rule(tolerance=None, vs_baseline={})},
            {"auc": 0.95},
            None,
            LINEAR,
            False,
            "auc: the pre-made baseline LinearClassifier reports no 'auc' (it reports "
            "['accuracy', 'loss']; set gate.metrics.auc.vs_baseline.metric)",
        ),
    ],
)
def test_gate_decisions(rules, metrics, baseline, premade, blessed, reason):
    from k2e_core.registry import gate

    decision = gate.judge(_Gate(rules), metrics, baseline, premade)
    assert decision["blessed"] is blessed and decision["reason"] == reason


def test_a_forced_bless_keeps_the_failed_checks_in_its_reason():
    from k2e_core.registry import gate

    decision = gate.judge(
        _Gate({"accuracy": _Rule(at_least=0.9)}, force="hotfix"), {"accuracy": 0.5}, None
    )
    assert decision["blessed"] and not decision["passed"] and decision["by"] == "forced"
    assert decision["reason"] == "forced: hotfix (checks failed: accuracy 0.5 < 0.9)"
