"""`k2e report`: one self-contained HTML page about a job, with pictures.

From a job spec: the training and evaluation curves of its model_dir (TensorBoard's event
files), the final metrics, a confusion matrix for classifiers (the latest checkpoint on the
eval data), and, under export.base, the gate's latest decision and the registry's history.
From an export base alone: the registry, and the curves of the newest version's model_dir.
The pictures are PNGs inside the page (matplotlib, the `report` extra): it opens anywhere,
offline, and can be attached to a run as one file.
"""

from __future__ import annotations

import base64
import datetime
import glob
import html
import io
import logging
import os
import tempfile

from k2e_core import records, registry, storage
from k2e_core.errors import SpecError

SPEED_TAGS = ("global_step/sec", "examples/sec")
RUN_NAMES = {
    ".": "train",
    "eval": "eval",
    "eval_baseline": "gate baseline",
    "baseline": "pre-made baseline (train)",
    "baseline/eval": "pre-made baseline (eval)",
}
SPEC_SUFFIXES = (".yaml", ".yml", ".json")


def report_step(target, out: str | None = None, overrides=None) -> dict:
    """Writes the report of `target` (a job spec, or an export base URL) to `out` (a local
    path or URL; default: report.html under model_dir, or under the base).
    Result: `records.ReportResult`."""
    from k2e_core.spec import load_spec

    spec = load_spec(target, overrides) if is_spec(target) else None
    with storage.configured(spec.storage.options if spec else None):
        page = gather(spec if spec is not None else target, _title(target))
        out = out or storage.join(page["model_dir"] or page["base"], "report.html")
        text = render(page)
        storage.write_bytes(out, text.encode())
    return records.as_result(
        records.ReportResult,
        {
            "report": storage.redact(out),
            "pictures": text.count("<img "),
            "model_dir": storage.redact(page["model_dir"]) if page["model_dir"] else None,
            "export_base": storage.redact(page["base"]) if page["base"] else None,
            "versions": len(page["history"]),
            "curves": sorted({tag for run in page["curves"].values() for tag in run}),
        },
    )


def is_spec(target) -> bool:
    """A job spec (a dict, inline JSON, a YAML/JSON file), not an export base."""
    if not isinstance(target, str):
        return True
    return target.lstrip().startswith("{") or target.lower().endswith(SPEC_SUFFIXES)


def _title(target) -> str | None:
    if isinstance(target, str) and not target.lstrip().startswith("{"):
        return os.path.basename(target.rstrip("/"))
    return None


def gather(spec_or_base, title: str | None = None) -> dict:
    """What the page shows, as plain data: of a job spec (a loaded `JobSpec`), or of an
    export base URL. Storage is configured by the caller."""
    if isinstance(spec_or_base, str):
        spec, model_dir, base = None, None, spec_or_base
    else:
        spec = spec_or_base
        model_dir = spec.path(spec.model_dir)
        base = spec.path(spec.export.base) if spec.export else None
    history = sorted(
        registry.entries(base) if base and storage.exists(base) else [],
        key=lambda r: r.get("created") or "",
    )
    if model_dir is None and history:
        model_dir = history[-1].get("source", {}).get("model_dir")
    curves = read_curves(model_dir) if model_dir and storage.exists(model_dir) else {}
    if not curves and not history:
        raise SpecError(
            "report",
            f"nothing to report on: no event files under {storage.redact(model_dir or '-')} "
            f"and no versions under {storage.redact(base or '-')}",
            "run the job first (k2e run SPEC), or pass its spec or export base",
        )
    confusion = _confusion_matrix(spec) if spec is not None and curves else None
    return {
        "title": title or os.path.basename(str(model_dir or base).rstrip("/")),
        "model_dir": model_dir,
        "base": base,
        "curves": curves,
        "metrics": final_metrics(curves, history),
        "confusion": confusion,
        "decision": history[-1] if history else None,
        "history": history,
        "generated": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def read_curves(model_dir: str) -> dict:
    """{run: {tag: [(step, value), ...]}} from the event files under `model_dir`, read with
    TensorBoard's own reader; a remote model_dir's event files are fetched first."""
    if storage.is_local(model_dir):
        return _read_event_dirs(storage.local_path(model_dir))
    with tempfile.TemporaryDirectory(prefix="k2e-report-") as local:
        for url in storage.glob(model_dir):
            relative = url[len(model_dir.rstrip("/")) + 1 :]
            if "events.out.tfevents." in os.path.basename(relative):
                os.makedirs(os.path.join(local, os.path.dirname(relative)), exist_ok=True)
                storage.fetch(url, os.path.join(local, os.path.dirname(relative)))
        return _read_event_dirs(local)


def _read_event_dirs(root: str) -> dict:
    from tensorboard.backend.event_processing import event_accumulator

    # its notes on graph events and file rotation are not the report's business
    logging.getLogger("tensorboard").setLevel(logging.ERROR)

    runs = {}
    pattern = os.path.join(root, "**", "events.out.tfevents.*")
    for directory in sorted({os.path.dirname(p) for p in glob.glob(pattern, recursive=True)}):
        accumulator = event_accumulator.EventAccumulator(
            directory, size_guidance={event_accumulator.SCALARS: 0}
        )
        accumulator.Reload()
        points = {
            tag: sorted({e.step: e.value for e in accumulator.Scalars(tag)}.items())
            for tag in accumulator.Tags()["scalars"]
        }
        if points:
            runs[os.path.relpath(directory, root)] = points
    return runs


def final_metrics(curves: dict, history: list) -> dict:
    """The last evaluation: from the eval run's curves, else the newest record's metrics."""
    evaluation = curves.get("eval") or {}
    if evaluation:
        step = max(points[-1][0] for points in evaluation.values())
        return {
            "step": step,
            "values": {tag: points[-1][1] for tag, points in evaluation.items()},
        }
    if history:
        metrics = dict(history[-1].get("metrics") or {})
        return {"step": metrics.pop("global_step", None), "values": metrics}
    return {"step": None, "values": {}}


def _confusion_matrix(spec) -> dict | None:
    from k2e_core.steps import job as job_steps

    with job_steps.open_job(spec, access="read") as job:
        job.check_data()
        job.prepare()
        if not job.trainer.latest_checkpoint():
            return None
        return job.trainer.confusion_matrix()


# --------------------------------------------------------------------------- pictures


def _figure(width=5.2, height=3.2):
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def curve_pictures(curves: dict) -> list[tuple[str, str]]:
    """(caption, PNG) per metric, every run overlaid (train, eval, the gate's baseline), and
    one of training speed."""
    tags = sorted(
        {tag for run in curves.values() for tag in run if tag not in SPEED_TAGS},
        key=lambda t: (t != "loss", t),
    )
    pictures = []
    for tag in tags:
        figure = _figure()
        axes = figure.subplots()
        for run, points in sorted(curves.items()):
            if tag not in points:
                continue
            steps, values = zip(*points[tag])
            name = RUN_NAMES.get(run, run)
            axes.plot(steps, values, marker="o" if run != "." else None, markersize=4, label=name)
        axes.set_xlabel("step")
        axes.set_ylabel(tag)
        axes.grid(alpha=0.3)
        axes.legend()
        pictures.append((tag, _png(figure)))
    speed = curves.get(".", {}).get("global_step/sec")
    if speed:
        figure = _figure()
        axes = figure.subplots()
        steps, rates = zip(*speed)
        axes.plot(steps, rates)
        axes.set_xlabel("step")
        axes.set_ylabel("steps/s")
        axes.set_ylim(0, max(rates) * 1.15)
        axes.grid(alpha=0.3)
        pictures.append(("training speed (global_step/sec)", _png(figure)))
    return pictures


def confusion_picture(confusion: dict) -> str:
    import numpy as np

    matrix = np.asarray(confusion["matrix"])
    names = confusion["categories"]
    size = max(3.0, 0.6 * len(names) + 2)
    figure = _figure(size + 1, size)
    axes = figure.subplots()
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes, shrink=0.8)
    axes.set_xticks(range(len(names)), names, rotation=45, ha="right")
    axes.set_yticks(range(len(names)), names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    if len(names) <= 20:
        top = matrix.max() or 1
        for (row, column), count in np.ndenumerate(matrix):
            color = "white" if count > top / 2 else "black"
            axes.text(column, row, str(count), ha="center", va="center", color=color)
    return _png(figure)


def history_picture(history: list) -> str | None:
    """Each metric over the versions and candidates: filled if blessed, hollow if not."""
    names = sorted(
        {
            k
            for r in history
            for k, v in (r.get("metrics") or {}).items()
            if k != "global_step" and isinstance(v, (int, float))
        },
        key=lambda t: (t != "loss", t),
    )
    if not names:
        return None
    figure = _figure(7.0, 2.4 * len(names))
    axes_list = figure.subplots(len(names), 1, squeeze=False, sharex=True)[:, 0]
    labels = [str(r.get("name", "?")) for r in history]
    for axes, name in zip(axes_list, names):
        values = [(r.get("metrics") or {}).get(name) for r in history]
        xs = [i for i, v in enumerate(values) if isinstance(v, (int, float))]
        axes.plot(xs, [values[i] for i in xs], color="tab:blue", alpha=0.5)
        for i in xs:
            blessed = bool(history[i].get("blessed"))
            axes.plot(
                i,
                values[i],
                marker="o",
                markersize=7,
                color="tab:blue",
                markerfacecolor="tab:blue" if blessed else "white",
            )
        axes.set_ylabel(name)
        axes.grid(alpha=0.3)
    axes_list[-1].set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    axes_list[0].set_title("filled: blessed, hollow: not blessed", fontsize=9)
    return _png(figure)


# --------------------------------------------------------------------------- the page

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.6em; }
.meta { color: #666; } table { border-collapse: collapse; margin: 0.6em 0; }
td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: left; }
th { background: #f4f4f4; } .pictures { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; } figcaption { color: #555; text-align: center; }
.blessed { color: #176f2c; font-weight: bold; } .rejected { color: #b3261e; font-weight: bold; }
.ok { color: #176f2c; } .failed { color: #b3261e; }
"""


def _e(value) -> str:
    return html.escape(str(value))


def _number(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else _e(value)


def _img(png: str, caption: str) -> str:
    return (
        f'<figure><img alt="{_e(caption)}" src="data:image/png;base64,{png}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def render(page: dict) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>k2e report: {_e(page['title'])}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>k2e report: {_e(page['title'])}</h1>",
        '<p class="meta">',
        f"model_dir {_e(storage.redact(page['model_dir']) if page['model_dir'] else '-')}"
        f" &middot; export base {_e(storage.redact(page['base']) if page['base'] else '-')}"
        f" &middot; generated {_e(page['generated'])}</p>",
    ]
    parts += _decision_section(page["decision"])
    metrics = page["metrics"]
    if metrics["values"]:
        parts.append(f"<h2>Final metrics (step {_e(metrics['step'])})</h2><table>")
        parts.append("<tr><th>metric</th><th>value</th></tr>")
        for name, value in sorted(metrics["values"].items()):
            parts.append(f"<tr><td>{_e(name)}</td><td>{_number(value)}</td></tr>")
        parts.append("</table>")
    pictures = curve_pictures(page["curves"])
    parts.append("<h2>Training and evaluation</h2>")
    if pictures:
        parts.append('<div class="pictures">')
        parts += [_img(png, caption) for caption, png in pictures]
        parts.append("</div>")
    else:
        parts.append("<p>No event files under model_dir.</p>")
    if page["confusion"]:
        parts.append("<h2>Confusion matrix (eval data, latest checkpoint)</h2>")
        parts.append(_img(confusion_picture(page["confusion"]), "rows: true, columns: predicted"))
    parts += _history_section(page["history"])
    parts.append("</body></html>")
    return "\n".join(parts)


def _decision_section(record: dict | None) -> list[str]:
    if not record:
        return []
    blessed = record.get("blessed")
    gate = record.get("gate") or {}
    out = [
        f"<h2>Gate: {_e(record.get('name'))} "
        f'<span class="{"blessed" if blessed else "rejected"}">'
        f"{'blessed' if blessed else 'not blessed'}</span></h2>",
        f"<p>{_e(record.get('reason', ''))} (by {_e(record.get('by', '?'))}, "
        f"run {_e(record.get('run_id'))}, {_e(record.get('created'))})</p>",
    ]
    checks = gate.get("checks") or []
    if checks:
        out.append("<table><tr><th>metric</th><th>value</th><th>rule</th><th>result</th></tr>")
        for check in checks:
            rule = f"{check['op']} {check['limit']:.4g}"
            if "baseline" in check:
                rule += f" (baseline version {check['baseline']}: {check['baseline_value']:.4g})"
            if "premade_baseline" in check:
                rule += f" (pre-made baseline {check['premade_baseline']}: "
                rule += f"{check['premade_value']:.4g})"
            ok = check.get("ok")
            out.append(
                f"<tr><td>{_e(check['metric'])}</td><td>{_number(check['value'])}</td>"
                f'<td>{_e(rule)}</td><td class="{"ok" if ok else "failed"}">'
                f"{'passed' if ok else 'failed'}</td></tr>"
            )
        out.append("</table>")
    premade = gate.get("premade_baseline")
    if premade:
        values = ", ".join(
            f"{k} {_number(v)}"
            for k, v in sorted((premade.get("metrics") or {}).items())
            if k != "global_step"
        )
        out.append(
            f"<p>Pre-made baseline: {_e(premade['estimator'])} at step "
            f"{_e(premade.get('global_step'))}, on the same eval data: {_e(values)}</p>"
        )
    return out


def _history_section(history: list) -> list[str]:
    if not history:
        return []
    names = sorted(
        {k for r in history for k in (r.get("metrics") or {}) if k != "global_step"},
        key=lambda t: (t != "loss", t),
    )
    out = [f"<h2>Registry ({len(history)} versions and candidates)</h2>"]
    picture = history_picture(history)
    if picture:
        out.append(_img(picture, "metrics by version"))
    premade = any((r.get("gate") or {}).get("premade_baseline") for r in history)
    head = "".join(f"<th>{_e(n)}</th>" for n in names)
    head += "<th>pre-made baseline</th>" if premade else ""
    out.append(
        "<table><tr><th>name</th><th>created</th><th>blessed</th><th>pinned</th>"
        f"{head}<th>reason</th></tr>"
    )
    for r in reversed(history):
        metrics = r.get("metrics") or {}
        cells = "".join(f"<td>{_number(metrics.get(n, ''))}</td>" for n in names)
        if premade:
            cells += f"<td>{_e(registry.premade_text(r, names))}</td>"
        blessed = r.get("blessed")
        out.append(
            f"<tr><td>{_e(r.get('name'))}</td><td>{_e(r.get('created'))}</td>"
            f'<td class="{"ok" if blessed else "failed"}">{"yes" if blessed else "no"}</td>'
            f"<td>{'yes' if r.get('pinned') else ''}</td>{cells}"
            f"<td>{_e(r.get('reason', ''))}</td></tr>"
        )
    out.append("</table>")
    return out
