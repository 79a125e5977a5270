"""`k2e report`: one self-contained HTML page, drawn by a real browser (Chromium, where
installed), from a job spec or an export base."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

K2E = os.path.join(os.path.dirname(sys.executable), "k2e")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# Counts, once the page has loaded, the pictures the browser decoded and laid out.
PROBE = """<script>
window.addEventListener("load", () => {
  const images = [...document.images];
  const drawn = images.filter(i => i.complete && i.naturalWidth > 0 && i.width > 0);
  document.body.setAttribute("data-images", images.length);
  document.body.setAttribute("data-drawn", drawn.length);
});
</script>"""


def drawn_in_browser(page: str, tmp_path) -> tuple[int, int]:
    """(pictures, pictures drawn) by headless Chromium, offline, for the page at `page`."""
    probe = tmp_path / "probed.html"
    with open(page, encoding="utf-8") as f:
        probe.write_text(f.read().replace("</body>", PROBE + "</body>"), encoding="utf-8")
    proc = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=5000",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = re.search(r'data-images="(\d+)" data-drawn="(\d+)"', proc.stdout)
    assert found, proc.stdout[-2000:]
    return int(found.group(1)), int(found.group(2))


def _cli(*args):
    proc = subprocess.run([K2E, *args], capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def two_days(example_data, tmp_path_factory):
    """Day 1 published version 1; day 2 was judged against it. The specs are files. The
    tests only read what the two days wrote, so they share it."""
    return trained_two_days(example_data, tmp_path_factory.mktemp("two-days"))


def trained_two_days(example_data, root, **changes) -> tuple[str, dict, dict]:
    """The retraining example's days 1 and 2 under `root`: (day 2's spec file, its spec,
    its run's result)."""
    from k2e_core.spec import apply_overrides
    from k2e_core.steps import job
    from tests.conftest import retraining_day, retraining_job

    day1 = {**retraining_job(example_data, root), **changes}
    day2 = apply_overrides(day1, retraining_day(2, example_data, root))
    job.run(day1)
    judged = job.run(day2)
    path = root / "day2.yaml"
    path.write_text(yaml.safe_dump(day2))
    return str(path), day2, judged


def test_the_report_is_one_page_with_every_picture_drawn(two_days, tmp_path):
    check_report_page(two_days[0], tmp_path)


def check_report_page(spec_path: str, tmp_path) -> None:
    """`k2e report` on day 2's spec: every section, five pictures, nothing fetched, and
    (where Chromium is) every picture drawn by the browser."""
    out = tmp_path / "report.html"
    code, stdout, stderr = _cli("report", spec_path, "--out", str(out))
    assert code == 0, stderr
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["report"] == str(out) and result["versions"] == 2
    assert {"loss", "accuracy", "global_step/sec"} <= set(result["curves"])
    page = out.read_text()
    # loss, accuracy, speed, the confusion matrix, the registry's metrics by version
    assert result["pictures"] == page.count("<img ") == 5
    for heading in (
        "Gate:",
        "Final metrics",
        "Training and evaluation",
        "Confusion matrix",
        "Registry",
    ):
        assert heading in page, heading
    assert re.search(r"Gate: \S+ <span class=\"(blessed|rejected)\">", page)
    # self-contained: nothing fetched from anywhere when it is opened
    assert not re.search(r'(src|href)="(https?:)?//', page) and "<script" not in page
    assert "<link" not in page
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed: the page was not rendered in a browser")
    images, drawn = drawn_in_browser(str(out), tmp_path)
    assert images == drawn == 5


def test_the_report_holds_what_the_registry_and_evaluation_say(two_days):
    from k2e_core import registry
    from k2e_core.steps import job, report

    _, day2, _ = two_days
    from k2e_core.spec import load_spec

    page = report.gather(load_spec(day2))
    evaluated = job.evaluate_step(day2, read_only=True)
    assert page["confusion"] == evaluated["confusion_matrix"]
    entries = registry.entries(day2["export"]["base"])
    assert [r["name"] for r in page["history"]] == [r["name"] for r in entries]
    newest = max(entries, key=lambda r: r["created"])
    assert page["decision"]["name"] == newest["name"]
    assert page["metrics"]["step"] == evaluated["global_step"]
    assert page["metrics"]["values"]["loss"] == pytest.approx(
        evaluated["metrics"]["loss"], rel=1e-5
    )
    runs = page["curves"]
    assert {".", "eval", "eval_baseline"} <= set(runs)


def test_an_export_base_alone_gives_the_registry_and_the_newest_runs_curves(two_days, tmp_path):
    from k2e_core.steps import report

    _, day2, _ = two_days
    out = tmp_path / "base.html"
    result = report.report_step(day2["export"]["base"], str(out))
    assert result["versions"] == 2 and result["model_dir"] == day2["model_dir"]
    assert "loss" in result["curves"]
    assert result["pictures"] == 4  # no confusion matrix without the job's spec and data


def test_nothing_to_report_is_one_line_and_exit_2(tmp_path):
    code, _, stderr = _cli("report", str(tmp_path / "nothing-here"))
    assert code == 2
    assert (
        stderr.strip().splitlines() == [stderr.strip().splitlines()[-1]]
        and "nothing to report on" in stderr
    )
    assert "run the job first" in stderr


def test_a_job_on_s3_gets_its_report_from_the_event_files_there(iris_spec, s3):
    """model_dir and export base on an S3 server: the event files are fetched, the page is
    written back to the bucket."""
    import s3fs

    from k2e_core.steps import job, report
    from tests.conftest import BUCKET

    spec = {
        **iris_spec,
        "model_dir": f"s3://{BUCKET}/iris/model",
        "export": {"base": f"s3://{BUCKET}/iris/export"},
        "storage": {"options": s3},
    }
    job.run(spec)
    out = f"s3://{BUCKET}/iris/report.html"
    result = report.report_step(spec, out)
    assert result["report"] == out and result["pictures"] == 5
    assert {"loss", "accuracy", "global_step/sec"} <= set(result["curves"])
    page = s3fs.S3FileSystem(**s3["s3"]).cat(out).decode()
    assert page.count("<img ") == 5 and 'Gate: 1 <span class="blessed">' in page
