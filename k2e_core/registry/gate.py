"""The gate: is a candidate good enough to become a serving version?

A candidate is blessed when every metric in `gate.metrics` meets its absolute bounds and,
where a blessed baseline exists, is not worse than the baseline by more than its tolerance,
both measured on the same evaluation data in the same run. With no metrics set, every
candidate is blessed; `gate.force` blesses whatever the checks say. The decision lists every
check, so a record says exactly why.
"""

from __future__ import annotations

from k2e_core.errors import SpecError
from k2e_core.records import GateCheck


def better(name: str, rule) -> str:
    if rule.better:
        return rule.better
    if rule.at_least is not None and rule.at_most is None:
        return "higher"
    if rule.at_most is not None and rule.at_least is None:
        return "lower"
    return "lower" if any(w in name.lower() for w in ("loss", "error")) else "higher"


def compares_with_previous(gate_spec) -> bool:
    """Whether a rule compares with the latest blessed version (has a tolerance)."""
    return any(rule.tolerance is not None for rule in gate_spec.metrics.values())


def compares_with_baseline(gate_spec) -> bool:
    return gate_spec.baseline != "none" and compares_with_previous(gate_spec)


def check_metric_names(gate_spec, metrics: dict) -> None:
    for name in gate_spec.metrics:
        if not isinstance(metrics.get(name), (int, float)):
            known = sorted(k for k, v in metrics.items() if isinstance(v, (int, float)))
            raise SpecError(
                f"gate.metrics.{name}",
                "the evaluation reports no such metric",
                f"use one of {known}",
            )


def judge(gate_spec, metrics: dict, baseline: dict | None, premade: dict | None = None) -> dict:
    """The decision for a candidate with `metrics`.

    `baseline`: None (no blessed version yet, or comparison turned off), or
    {"version", "metrics"} measured on the same data, or {"version", "error"} when it could
    not be measured (then the candidate is not blessed). `premade`: the job's pre-made
    baseline ({"estimator", "metrics", ...} or {..., "error"}), for `vs_baseline` rules.
    """
    check_metric_names(gate_spec, metrics)
    checks, problems = [], []
    for name, rule in gate_spec.metrics.items():
        value = float(metrics[name])
        if rule.at_least is not None:
            checks.append(_check(name, value, ">=", rule.at_least, value >= rule.at_least))
        if rule.at_most is not None:
            checks.append(_check(name, value, "<=", rule.at_most, value <= rule.at_most))
        if baseline and "metrics" in baseline and rule.tolerance is not None:
            was = baseline["metrics"].get(name)  # measured on this run's eval data
            if isinstance(was, (int, float)):
                checks.append(
                    _compare(
                        name,
                        value,
                        better(name, rule),
                        was,
                        rule.tolerance,
                        baseline=baseline["version"],
                        baseline_value=was,
                    )
                )
        if rule.vs_baseline is not None:
            check = _against_premade(name, value, rule, premade)
            if isinstance(check, str):
                problems.append(check)
            else:
                checks.append(check)
    failed = [c for c in checks if not c["ok"]]
    problems = [_describe(c) for c in failed] + problems
    if baseline and "error" in baseline:
        problems.append(
            f"baseline version {baseline['version']} could not be measured ({baseline['error']})"
        )
    passed = not problems
    if gate_spec.force:
        reason = f"forced: {gate_spec.force}" + (
            f" (checks failed: {'; '.join(problems)})" if problems else ""
        )
    elif problems:
        reason = "; ".join(problems)
    elif not checks:
        reason = "no gate metrics set" if not gate_spec.metrics else "no checks apply"
    else:
        reason = "; ".join(_describe(c) for c in checks)
    if not (baseline and "metrics" in baseline) and compares_with_previous(gate_spec) and passed:
        beside_premade = any(r.vs_baseline for r in gate_spec.metrics.values())
        reason += (
            "; baseline comparison is off"
            if gate_spec.baseline == "none"
            else "; no blessed version yet to compare with"
            if beside_premade
            else "; no blessed baseline yet: judged on thresholds alone"
        )
    return {
        "blessed": passed or bool(gate_spec.force),
        "by": "forced" if gate_spec.force else "gate",
        "passed": passed,
        "reason": reason,
        "checks": checks,
        "baseline": baseline,
    }


def _compare(name, value, direction, was, tolerance, **extra) -> dict:
    """`value` against `was`, allowing `tolerance` the worse way."""
    if direction == "higher":
        return _check(name, value, ">=", was - tolerance, value >= was - tolerance, **extra)
    return _check(name, value, "<=", was + tolerance, value <= was + tolerance, **extra)


def _against_premade(name, value, rule, premade) -> dict | str:
    """The check of `rule.vs_baseline`, or why it cannot be made (then not blessed)."""
    if not premade:
        return f"{name}: no pre-made baseline was measured"
    estimator = premade["estimator"]
    wanted = rule.vs_baseline.metric or name
    was = (premade.get("metrics") or {}).get(wanted)
    if not isinstance(was, (int, float)):
        known = sorted(k for k, v in (premade.get("metrics") or {}).items() if k != "global_step")
        return (
            f"{name}: the pre-made baseline {estimator} reports no {wanted!r} (it reports "
            f"{known}; set gate.metrics.{name}.vs_baseline.metric)"
        )
    return _compare(
        name,
        value,
        better(name, rule),
        was,
        rule.vs_baseline.tolerance,
        premade_baseline=estimator,
        premade_value=was,
    )


def _check(metric, value, op, limit, ok, **extra) -> dict:
    return GateCheck(
        metric=metric, value=value, op=op, limit=round(limit, 10), ok=ok, **extra
    ).dump()


def _describe(check: dict) -> str:
    shown = check["op"] if check["ok"] else {">=": "<", "<=": ">"}[check["op"]]
    text = f"{check['metric']} {check['value']:.4g} {shown} {check['limit']:.4g}"
    if "baseline" in check:
        text += (
            f" (baseline version {check['baseline']}: {check['baseline_value']:.4g}, "
            "with tolerance)"
        )
    if "premade_baseline" in check:
        text += (
            f" (pre-made baseline {check['premade_baseline']}: {check['premade_value']:.4g}, "
            "with tolerance)"
        )
    return text
