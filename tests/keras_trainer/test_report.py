"""The retraining example on the Keras trainer, day by day, and `k2e report` on what it
wrote: the same page from its curves, its evaluation and the registry as for the Estimator
trainer (tests/core/test_report.py)."""

from __future__ import annotations

import json
import os

import pytest

from tests.core.test_report import check_report_page, trained_two_days


@pytest.mark.slow
def test_day_two_warm_starts_from_day_ones_version_and_the_report_has_every_picture(
    example_data, tmp_path
):
    spec_path, _, judged = trained_two_days(example_data, tmp_path / "days", trainer="keras")
    assert judged["version"] == 2 and judged["gate"]["baseline"]["version"] == 1
    with open(os.path.join(judged["export_path"], "k2e-record.json")) as f:
        record = json.load(f)
    assert record["warm_start"]["version"] == 1
    check_report_page(spec_path, tmp_path)
