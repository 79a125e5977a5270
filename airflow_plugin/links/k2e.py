"""Extra links on the k2e operators' task pages: TensorBoard on the task's model_dir, the
published version, the job's report.

Each URL comes from a template with fields taken from the step's result, set on the
operator (`tensorboard_url=...`) or once for every DAG in the `[k2e]` section of the
Airflow configuration (`AIRFLOW__K2E__TENSORBOARD_URL`):

    tensorboard_url  e.g. https://tensorboard.example.com/#scalars&logdir={model_dir}
    model_url        {export_path} {version} {export_base}; default: the version's location
    report_url       {report}; default: the report's location

Fields are URL-quoted (`/` and `:` kept). The task runner stores each link when the task
ends, so the UI shows it for successful and skipped tasks alike.
"""

from __future__ import annotations

import os
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink


class _K2eLink(BaseOperatorLink):
    def get_link(self, operator, *, ti_key) -> str:
        return (getattr(operator, "k2e_links", None) or {}).get(self.name, "")


class K2eTensorBoardLink(_K2eLink):
    name = "TensorBoard"


class K2eModelLink(_K2eLink):
    name = "Published version"


class K2eReportLink(_K2eLink):
    name = "k2e report"


def _as_url(location: str) -> str:
    return location if "://" in location else "file://" + os.path.abspath(location)


def _fill(template: str, **fields) -> str:
    return template.format(**{k: quote(str(v), safe="/:") for k, v in fields.items()})


def links_for(result: dict, templates: dict) -> dict:
    """{link name: URL} for a step's `result`; `templates`: {tensorboard_url, model_url,
    report_url} (None: not set)."""
    links = {}
    model_dir = result.get("model_dir")
    if model_dir and templates.get("tensorboard_url"):
        links[K2eTensorBoardLink.name] = _fill(templates["tensorboard_url"], model_dir=model_dir)
    if result.get("blessed") and result.get("export_path"):
        fields = {
            "export_path": result["export_path"],
            "version": result.get("version"),
            "export_base": result.get("export_base", ""),
        }
        template = templates.get("model_url")
        links[K2eModelLink.name] = (
            _fill(template, **fields) if template else _as_url(result["export_path"])
        )
    report = result.get("report")
    if report:
        template = templates.get("report_url")
        links[K2eReportLink.name] = _fill(template, report=report) if template else _as_url(report)
    return links
