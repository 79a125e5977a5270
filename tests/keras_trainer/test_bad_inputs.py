"""The catalogue of bad inputs and faults (tests/core/test_bad_inputs.py) on the Keras
trainer: the same job, broken the same way, gives the same one line, exit code and nothing
lost. Where a case uses what only the Estimator trainer has (the pre-made baseline and
models), its line is the Keras trainer's refusal of that field instead."""

from __future__ import annotations

import dataclasses

import pytest

from tests.core.test_bad_inputs import CASES, check, trained_job

REFUSED = "spec: {field}: the keras trainer trains a Keras model in one process"

#: The cases whose first problem on this trainer is a field it refuses.
ESTIMATOR_ONLY = {
    "baseline metric it does not report": "baseline",
    "evaluate without a trained baseline": "baseline",
    "export without a trained baseline": "baseline",
    "pre-made model on two label columns": "model.premade",
    "pre-made model on a column the files lack": "model.premade",
}


def _on_this_trainer(name: str):
    case = CASES[name]
    if name in ESTIMATOR_ONLY:
        return dataclasses.replace(case, expect=REFUSED.format(field=ESTIMATOR_ONLY[name]))
    return case


@pytest.fixture(scope="module")
def trained(example_data, tmp_path_factory):
    return trained_job(example_data, tmp_path_factory.mktemp("trained"), trainer="keras")


def test_the_cases_named_here_are_in_the_catalogue():
    assert set(ESTIMATOR_ONLY) <= set(CASES)


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_or_fault_on_the_keras_trainer(
    name, trained, tmp_path, capsys, monkeypatch, request
):
    check(_on_this_trainer(name), trained, tmp_path, capsys, monkeypatch, request)
