"""`k2e`: run a job or one of its steps from a job spec.

The last line on stdout is the step's result as one JSON object. Exit codes: 0 success,
2 bad input (the message names the field and the fix), 1 a failure during the run, 3 one
that a rerun would repeat (see k2e_core.errors).
Progress and errors go to stderr. TensorFlow is imported only by commands that need it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

STEP_HELP = {
    "run": "convert, train, evaluate and export (the whole job)",
    "convert": "convert the Keras model and write its warm-start checkpoint",
    "train": "train to train.steps (resumes from the last checkpoint)",
    "evaluate": "evaluate the latest checkpoint on the eval data (and run the gate)",
    "export": "export and verify a SavedModel; publish it if the gate blesses it",
    "validate": "check spec, files and model/data compatibility without training",
}


SCHEMA_NAMES = [
    "spec",
    "decision",
    "warm-start",
    "version",
    "manifest",
    *(name for name in STEP_HELP),
    "report",
]

REGISTRY_ACTIONS = {
    "list": "every version and candidate with its record",
    "latest": "the latest blessed version's record",
    "bless": "bless a version, or promote a candidate to the next version",
    "unbless": "mark a version as not to be used",
    "pin": "keep a version through retention",
    "unpin": "let retention remove it again",
    "prune": "keep the newest --keep versions and candidates",
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="k2e",
        description="Train and ship a compiled Keras model as a TensorFlow Estimator.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in STEP_HELP.items():
        s = sub.add_parser(name, help=text, description=text)
        s.add_argument("spec", help="job spec: YAML/JSON file path or URL")
        _add_overrides(s, "train.steps=200")
        if name in ("run", "train", "validate"):
            s.add_argument(
                "--full",
                action="store_true",
                help="check every row of the data before training, not only "
                "data.scan_mb of each split (same as --set data.scan_mb=all)",
            )
        if name in ("run", "train"):
            s.add_argument(
                "--cluster",
                metavar="LAYOUT",
                help="train as a local cluster on this machine, e.g. "
                "workers=2,ps=1,evaluator=1 (one process per task, TF_CONFIG each)",
            )
        if name == "export":
            s.add_argument(
                "--metrics",
                metavar="JSON",
                help="evaluation metrics to record in the version's manifest, "
                "e.g. '{\"accuracy\": 0.93}' (default: measured on the eval data)",
            )
        s.add_argument("-v", "--verbose", action="store_true", help="debug logs and tracebacks")
    s = sub.add_parser(
        "registry",
        help="list, bless, unbless, pin and prune published versions",
        description="The export base as a registry: versions and kept "
        "candidates with their records.",
    )
    s.add_argument(
        "action",
        choices=REGISTRY_ACTIONS,
        help=", ".join(f"{k}: {v}" for k, v in REGISTRY_ACTIONS.items()),
    )
    s.add_argument(
        "base", help="export base URL, or a job spec file (its export.base and storage options)"
    )
    s.add_argument(
        "name", nargs="?", help="version number or candidate name (bless, unbless, pin, unpin)"
    )
    s.add_argument("--reason", default="", help="why (bless, unbless, pin): kept in the record")
    s.add_argument("--keep", type=int, help="prune: how many versions and candidates to keep")
    s.add_argument("--json", action="store_true", help="list: one JSON object instead of a table")
    s.add_argument("-v", "--verbose", action="store_true", help="debug logs and tracebacks")
    s = sub.add_parser(
        "report",
        help="write one HTML page with the job's curves, metrics, gate and registry",
        description="One self-contained HTML page (pictures inside, viewable offline): "
        "training and evaluation curves, final metrics, a confusion matrix for classifiers, "
        "the gate's latest decision and the registry's history.",
    )
    s.add_argument("target", help="job spec (YAML/JSON file path or URL), or an export base URL")
    s.add_argument(
        "--out", help="where to write it, a path or URL (default: report.html in model_dir)"
    )
    _add_overrides(s, "model_dir=s3://bucket/runs/day2")
    s.add_argument("-v", "--verbose", action="store_true", help="debug logs and tracebacks")
    s = sub.add_parser(
        "tfjob",
        help="write the spec's cluster as a Kubeflow TFJob, or submit it",
        description="The job spec's cluster section as a Kubeflow TFJob "
        "(kubeflow.org/v1): YAML on stdout, or --submit to create it and wait.",
    )
    s.add_argument("spec", help="job spec: YAML/JSON file path or URL")
    _add_overrides(s, "cluster.workers=4")
    s.add_argument("--name", help="TFJob name, also the run id (default: from the spec)")
    s.add_argument(
        "--submit",
        action="store_true",
        help="create the TFJob, wait for it, print the published version as JSON",
    )
    s.add_argument(
        "--kube-config", help="kubeconfig file (default: in-cluster, then ~/.kube/config)"
    )
    s.add_argument("--context", help="kubeconfig context")
    s.add_argument("-v", "--verbose", action="store_true", help="debug logs and tracebacks")
    s = sub.add_parser(
        "predict",
        help="predict with a published version (its SavedModel)",
        description="Runs a signature of a published version on rows given as JSON: a list "
        "of rows for one input, {input: rows} for several, {feature: rows} for a signature of "
        "serialized tf.Examples (sent as tf.Examples).",
    )
    s.add_argument("version", help="the version's URL (an export step's export_path)")
    s.add_argument("--inputs", metavar="JSON", help="the rows, e.g. '[[5.1, 3.5, 1.4, 0.2]]'")
    s.add_argument("--signature", help="signature name (default: serving_default)")
    _add_overrides(s, "storage.options.s3.endpoint_url=http://127.0.0.1:9000")
    s.add_argument("-v", "--verbose", action="store_true", help="debug logs and tracebacks")
    s = sub.add_parser(
        "schema",
        help="print the JSON Schema of the job spec, a record or a step's result",
        description="print the JSON Schema of the job spec (default), of a record k2e keeps "
        "(decision, warm-start, version, manifest) or of a step's result",
    )
    s.add_argument("name", nargs="?", default="spec", choices=SCHEMA_NAMES)
    s.add_argument("-v", "--verbose", action="store_true", help=argparse.SUPPRESS)
    return p


def _add_overrides(s: argparse.ArgumentParser, example: str) -> None:
    s.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a spec field, e.g. --set {example} (repeatable)",
    )
    s.add_argument(
        "--overrides",
        dest="overrides_file",
        metavar="FILE",
        help="JSON/YAML file of {KEY: VALUE} overrides, applied before --set "
        "(keeps secrets such as storage.options off the command line)",
    )


def _emit(result: dict) -> None:
    sys.stdout.write(json.dumps(result, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def _overrides_from_file(path):
    if not path:
        return None
    import yaml

    from k2e_core.errors import SpecError

    try:
        with open(path) as f:
            overrides = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as err:
        raise SpecError(
            "--overrides",
            f"cannot read {path} ({str(err).splitlines()[0]})",
            "pass a JSON/YAML file",
        ) from None
    if not isinstance(overrides, dict):
        raise SpecError(
            "--overrides", f"{path} is not a mapping", 'write {"train.steps": 200, ...}'
        )
    return overrides


#: Commands that import TensorFlow (a TensorFlow-free install has the others).
TENSORFLOW_COMMANDS = {*STEP_HELP, "predict"}


def _need_tensorflow(command: str) -> None:
    """One line, before anything runs, where this install cannot run `command`."""
    from k2e_core.errors import SpecError
    from k2e_core.versions import stack_problem

    problem = stack_problem()
    if problem:
        raise SpecError(f"k2e {command}", problem, "")


def _all_overrides(args) -> dict:
    """--overrides FILE, then each --set."""
    from k2e_core.spec import parse_override

    return {
        **(_overrides_from_file(args.overrides_file) or {}),
        **dict(parse_override(item) for item in args.overrides),
    }


def _json_argument(flag: str, text):
    if text is None:
        return None
    from k2e_core.errors import SpecError

    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise SpecError(flag, f"{text[:80]!r} is not JSON ({err})", "pass JSON") from None


def _text_argument(text):
    """A flag's text, also as the JSON string an operator passes ('"raw:predict"')."""
    if text and text.startswith('"'):
        return json.loads(text)
    return text


def _metrics_argument(text):
    if text is None:
        return None
    from k2e_core.errors import SpecError
    from k2e_core.steps.job import check_metrics

    try:
        metrics = json.loads(text)
    except json.JSONDecodeError as err:
        raise SpecError(
            "--metrics",
            f"{text!r} is not JSON ({err})",
            "pass a JSON object, e.g. --metrics '{\"accuracy\": 0.93}'",
        ) from None
    check_metrics(metrics, "--metrics")
    return metrics


def _stop_training_on_sigterm():
    """SIGTERM (an orchestrator stopping the task): save a checkpoint, stop, exit 1."""
    import signal

    from k2e_core.stopping import request_stop

    def on_sigterm(signum, frame):
        print("k2e: SIGTERM: stopping after the current step", file=sys.stderr)
        request_stop()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process

    signal.signal(signal.SIGTERM, on_sigterm)


def _registry(args) -> int:
    from k2e_core import registry, storage
    from k2e_core.errors import SpecError

    base, settings = args.base, None
    if os.path.isfile(args.base):
        from k2e_core.spec import load_spec

        spec = load_spec(args.base)
        if spec.export is None:
            raise SpecError(
                "export", f"{args.base} has no export section", "pass the export base URL"
            )
        base, settings = spec.path(spec.export.base), spec.storage
    if args.action in ("bless", "unbless", "pin", "unpin") and not args.name:
        raise SpecError(
            "name",
            f"registry {args.action} needs a version or candidate name",
            f"k2e registry {args.action} BASE 3 --reason ...",
        )
    with storage.configured(settings.options if settings else None):
        missing = storage.missing_bucket(base)
        if missing:
            raise SpecError(
                "base",
                f"{storage.redact(base)}: {missing}",
                "fix the URL, or the storage options (endpoint) that reach the bucket",
            )
        if args.action == "list":
            records = registry.entries(base)
            if args.json:
                _emit({"base": storage.redact(base), "entries": records})
            else:
                print(registry.table(records) if records else f"nothing published under {base}")
            return 0
        if args.action == "latest":
            result = registry.latest_blessed(base)
            if result is None:
                raise SpecError(
                    "base",
                    f"no blessed version under {storage.redact(base)}",
                    "publish one with k2e run, or bless one by hand",
                )
        elif args.action == "bless":
            result = registry.bless(base, args.name, args.reason)
        elif args.action == "unbless":
            result = registry.unbless(base, args.name, args.reason)
        elif args.action in ("pin", "unpin"):
            result = registry.pin(base, args.name, args.action == "pin", args.reason)
        else:
            if args.keep is None or args.keep < 1:
                raise SpecError(
                    "--keep",
                    "is required for prune"
                    if args.keep is None
                    else f"must be at least 1, got {args.keep}",
                    "e.g. --keep 10",
                )
            result = {"removed": registry.prune(base, args.keep)}
    _emit(result)
    return 0


def _tfjob(args, spec) -> int:
    from k2e_core.distributed import tfjob

    if not args.submit:
        import yaml

        sys.stdout.write(yaml.safe_dump(tfjob.manifest(spec, args.name), sort_keys=False))
        return 0
    _emit(tfjob.run(spec, args.name, kube_config=args.kube_config, context=args.context))
    return 0


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.command == "schema":
        from k2e_core.records import SCHEMAS
        from k2e_core.spec import json_schema

        schema = (
            json_schema()
            if args.name == "spec"
            else SCHEMAS[args.name].model_json_schema(by_alias=True)
        )
        sys.stdout.write(json.dumps(schema, indent=2) + "\n")
        return 0

    from k2e_core.errors import describe
    from k2e_core.logs import configure_cli_logging

    configure_cli_logging(args.verbose)
    try:
        if args.command in TENSORFLOW_COMMANDS:
            _need_tensorflow(args.command)
        if args.command == "registry":
            return _registry(args)
        if args.command == "predict":
            from k2e_core.estimator.serving import predict_step

            _emit(
                predict_step(
                    args.version,
                    _all_overrides(args),
                    _json_argument("--inputs", args.inputs),
                    _text_argument(args.signature),
                )
            )
            return 0
        if args.command == "report":
            from k2e_core.steps.report import report_step

            _emit(report_step(args.target, args.out, _all_overrides(args)))
            return 0
        from k2e_core.spec import load_spec

        spec = load_spec(args.spec, _overrides_from_file(args.overrides_file))
        spec = load_spec(spec, args.overrides)
        if getattr(args, "full", False):
            spec = load_spec(spec, ["data.scan_mb=all"])
        if args.command == "tfjob":
            return _tfjob(args, spec)
        from k2e_core.steps.job import STEPS

        if getattr(args, "cluster", None):
            from k2e_core.distributed import launcher

            spec = load_spec(spec, launcher.parse_layout(args.cluster))
            result = launcher.launch(args.command, spec)
            _emit(result)
            return 0
        _stop_training_on_sigterm()
        if args.command == "export":
            result = STEPS["export"](spec, metrics=_metrics_argument(args.metrics))
        else:
            result = STEPS[args.command](spec)
    except (Exception, KeyboardInterrupt) as err:  # TensorFlow's and storage's too: one line
        failure = describe(err)
        if not failure.expected and (args.verbose or os.environ.get("K2E_DEBUG")):
            import traceback

            traceback.print_exc()
        hint = "" if failure.expected else " (rerun with -v for the traceback)"
        print(f"k2e: {failure.line}{hint}", file=sys.stderr)
        return failure.exit_code
    _emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
