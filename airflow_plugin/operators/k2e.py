"""Operators for the steps of a k2e job. Each one runs the core's step and returns its JSON
result as XCom, each top-level field also under its own key, so the next task reads
`train.output["model_dir"]`, `evaluate.output["metrics"]`, `publish.output["version"]`.

    K2eValidateOperator   spec, files and model/data fit, without training
    K2eConvertOperator    Keras model -> Estimator, warm-start checkpoint in model_dir
    K2eTrainOperator      train to train.steps (a retry resumes from the last checkpoint)
    K2eEvaluateOperator   evaluate the latest checkpoint; the gate decides on the candidate
    K2eExportOperator     export, verify, and publish a blessed version (or keep a candidate)
    K2eJobOperator        all of the above in one task
    K2ePredictOperator    predict with a published version (the one an asset event names)

`spec` is a job spec: a dict, or the path/URL of a YAML/JSON file. `overrides` is
`{"train.steps": 200, ...}` (or `["train.steps=200", ...]`). Both are templated, values
inside them too, so run-dependent locations and XComArgs work. A run triggered by hand has
no logical date (`logical_date`, `ds` and the like are undefined): use
`{{ dag_run.run_after | ts_nodash }}`, or `{{ (dag_run.logical_date or dag_run.run_after) ... }}`.
A template that cannot be rendered fails the task without retries, naming the field.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from typing import Any

from airflow.sdk import Asset, AssetAlias, BaseOperator, conf
from airflow.sdk.exceptions import (
    AirflowException,
    AirflowFailException,
    AirflowNotFoundException,
    AirflowSkipException,
)

from airflow_plugin.links.k2e import K2eModelLink, K2eReportLink, K2eTensorBoardLink, links_for

LINK_TEMPLATES = ("tensorboard_url", "model_url", "report_url")


# What a run triggered by hand (logical_date null, Airflow 3's default) has no value for.
_LOGICAL_DATE_KEYS = (
    "logical_date",
    "ds",
    "ds_nodash",
    "ts",
    "ts_nodash",
    "ts_nodash_with_tz",
    "data_interval_start",
    "data_interval_end",
    "prev_data_interval_start_success",
    "prev_data_interval_end_success",
)


def _template_error(task_id: str, field: str, error: Exception) -> str:
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    if any(f"'{key}' is undefined" in message for key in _LOGICAL_DATE_KEYS):
        fix = (
            "a run triggered by hand has no logical date: use dag_run.run_after, or "
            "(dag_run.logical_date or dag_run.run_after)"
        )
    else:
        fix = "fix the template"
    return f"{task_id}: field '{field}' cannot be rendered: {message}; {fix} (not retried)"


class K2eBaseOperator(BaseOperator):
    """Runs one step of a k2e job: in this process, or in another interpreter (`python`).

    :param spec: job spec, a dict or a YAML/JSON path or URL (templated)
    :param overrides: spec fields to override, `{"a.b": value}` or `["a.b=value"]` (templated)
    :param storage_conn_id: Airflow connection whose credentials become the job's fsspec
        storage options (aws, google_cloud_platform or k2e_storage); never logged or returned
    :param python: interpreter of a virtualenv holding k2e and the trainer the spec names
        (TensorFlow 2.15 for `trainer: estimator`, TensorFlow 2.21 with Keras 3 for
        `trainer: keras`), for workers that cannot carry TensorFlow themselves (templated)
    :param stop_timeout: seconds a step in `python` gets to save a checkpoint after the task
        is killed, before it is killed too
    :param report: after the step, write `k2e report` (report.html in model_dir), link it
        from the task, and return its location as XCom `report`
    :param tensorboard_url: template of the task's TensorBoard link, with `{model_dir}`
        (default: `[k2e] tensorboard_url` in the Airflow configuration; none: no link)
    :param model_url: template of the published version's link, with `{export_path}`,
        `{version}`, `{export_base}` (default: `[k2e] model_url`, else the location)
    :param report_url: template of the report's link, with `{report}` (default:
        `[k2e] report_url`, else the location)
    """

    step: str = ""
    template_fields: Sequence[str] = ("spec", "overrides", "python", *LINK_TEMPLATES)
    template_fields_renderers = {"spec": "json", "overrides": "json"}
    operator_extra_links = (K2eTensorBoardLink(), K2eReportLink())
    ui_color = "#fde4c4"

    def __init__(
        self,
        *,
        spec: str | dict,
        overrides: dict[str, Any] | list[str] | None = None,
        storage_conn_id: str | None = None,
        python: str | None = None,
        stop_timeout: float = 60,
        report: bool = False,
        tensorboard_url: str | None = None,
        model_url: str | None = None,
        report_url: str | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.spec = spec
        self.overrides = overrides
        self.storage_conn_id = storage_conn_id
        self.python = python
        self.stop_timeout = stop_timeout
        self.report = report
        self.tensorboard_url = tensorboard_url
        self.model_url = model_url
        self.report_url = report_url
        self.k2e_links: dict[str, str] = {}
        self._lineage: tuple[dict, dict] = ({}, {})
        self._child: subprocess.Popen | None = None

    def render_template_fields(self, context, jinja_env=None) -> None:
        """As BaseOperator's, one field at a time: an error names its field, and fails the
        task without retries (the same template fails the same way every time)."""
        import jinja2

        jinja_env = jinja_env or self.get_template_env()
        for field in self.template_fields:
            try:
                self._do_render_template_fields(self, (field,), context, jinja_env, set())
            except jinja2.TemplateError as e:
                raise AirflowFailException(_template_error(self.task_id, field, e)) from None

    def execute(self, context) -> dict:
        from k2e_core.records import summary_line

        overrides = self._overrides()
        result = self._run(self.step, overrides, self.step_kwargs())
        if self.report:
            result["report"] = self._run("report", overrides, {})["report"]
        self.k2e_links = links_for(result, self._link_templates())
        self._lineage = overrides, result
        self.log.info("k2e %s: %s", self.step, summary_line(result))
        for key, value in result.items():  # `task.output["model_dir"]` in downstream tasks
            context["ti"].xcom_push(key=key, value=value)
        return result

    def get_openlineage_facets_on_complete(self, task_instance):
        """For the OpenLineage provider: the data files this step read, the model_dir it read
        or wrote, the version (or candidate) it published (k2e_core.steps.lineage)."""
        from airflow.providers.common.compat.openlineage.facet import Dataset
        from airflow.providers.openlineage.extractors import OperatorLineage

        from k2e_core.spec import load_spec
        from k2e_core.steps.lineage import step_datasets

        overrides, result = self._lineage
        inputs, outputs = step_datasets(self.step, load_spec(self.spec, overrides), result)
        return OperatorLineage(
            inputs=[Dataset(namespace=n, name=name) for n, name in inputs],
            outputs=[Dataset(namespace=n, name=name) for n, name in outputs],
        )

    def _link_templates(self) -> dict:
        return {
            name: getattr(self, name) or conf.get("k2e", name, fallback=None)
            for name in LINK_TEMPLATES
        }

    def step_kwargs(self) -> dict:
        """Extra keyword arguments of the core's step (and CLI flags in another interpreter)."""
        return {}

    def on_kill(self) -> None:
        """Training saves a checkpoint and stops within a step; a retry resumes from it."""
        child = self._child
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)
            deadline = threading.Timer(self.stop_timeout, _kill_if_running, [child])
            deadline.daemon = True
            deadline.start()
            return
        from k2e_core.stopping import request_stop  # TensorFlow-free

        request_stop()

    # ------------------------------------------------------------------ inputs
    def _overrides(self) -> dict:
        from k2e_core.errors import SpecError
        from k2e_core.spec import parse_override

        if isinstance(self.overrides, dict):
            overrides = dict(self.overrides)
        else:
            try:
                overrides = dict(parse_override(item) for item in self.overrides or [])
            except SpecError as err:
                raise self._failure(
                    AirflowFailException,
                    f'overrides: {err.problem}; write "train.steps=200" or pass a dict',
                ) from None
        if self.storage_conn_id:
            for protocol, options in self._storage_options().items():
                for name, value in options.items():
                    overrides[f"storage.options.{protocol}.{name}"] = value
        return overrides

    def _storage_options(self) -> dict:
        from airflow_plugin.hooks.storage import K2eStorageHook

        try:
            return K2eStorageHook(self.storage_conn_id).storage_options()
        except AirflowNotFoundException:
            raise self._failure(
                AirflowFailException,
                (
                    f"storage_conn_id: connection {self.storage_conn_id!r} does not exist; create "
                    "it (Admin > Connections, or AIRFLOW_CONN_<ID>) or fix the id"
                ),
            ) from None
        except ValueError as err:
            raise self._failure(AirflowFailException, f"storage_conn_id: {err}") from None

    # ------------------------------------------------------------------ running
    def _run(self, step: str, overrides: dict, kwargs: dict) -> dict:
        """The core's `step` (or `report`): here, or in `python`."""
        if self.python:
            return self._run_in_interpreter(step, overrides, kwargs)
        from k2e_core.errors import describe

        try:
            return self._run_step(step, overrides, kwargs)
        except Exception as err:
            failure = describe(err)  # bad input and repeatable failures are not retried
            kind = AirflowException if failure.retryable else AirflowFailException
            raise self._failure(kind, f"k2e {step}: {failure.line}") from (
                None if failure.expected else err
            )

    def _run_step(self, step: str, overrides: dict, kwargs: dict) -> dict:
        if step == "report":
            from k2e_core.steps.report import report_step

            return report_step(self.spec, None, overrides)
        from k2e_core.steps.job import STEPS

        return STEPS[step](self.spec, overrides, **kwargs)

    def _failure(self, kind, message: str) -> Exception:
        """The error, also logged as one line ahead of Airflow's traceback."""
        self.log.error("%s", message)
        return kind(message)

    def _check_interpreter(self) -> None:
        """`python` runs, holds k2e, and the same k2e as this worker: else one line naming
        `python`, not retried (a retry meets the same interpreter)."""
        from k2e_core import __version__

        fix = (
            "point python at the interpreter of a virtualenv with k2e's TensorFlow install "
            "(pip install -c constraints.txt 'k2e[tensorflow]', or for trainer: keras "
            "pip install -c constraints-keras.txt 'k2e[keras]'), e.g. /opt/k2e/.venv/bin/python"
        )
        probe = [self.python, "-c", "import k2e_core; print(k2e_core.__version__)"]
        try:
            proc = subprocess.run(probe, capture_output=True, text=True, timeout=120)
        except OSError as err:
            raise self._failure(
                AirflowFailException,
                f"python: {self.python} cannot be run ({err.strerror}); {fix} (not retried)",
            ) from None
        if proc.returncode != 0:
            said = (proc.stderr.strip().splitlines() or ["exit code " + str(proc.returncode)])[-1]
            raise self._failure(
                AirflowFailException,
                f"python: {self.python} has no k2e ({said}); {fix} (not retried)",
            )
        there = proc.stdout.strip()
        if there != __version__:
            raise self._failure(
                AirflowFailException,
                f"python: {self.python} has k2e {there}, this worker k2e {__version__}; "
                "install the same k2e version in both (not retried)",
            )

    def _cli_target(self) -> str:
        """The CLI's positional argument for this task: the job spec."""
        return self.spec if isinstance(self.spec, str) else json.dumps(self.spec)

    def _run_in_interpreter(self, step: str, overrides: dict, kwargs: dict) -> dict:
        self._check_interpreter()
        spec = self._cli_target()
        with tempfile.TemporaryDirectory(prefix="k2e-task-") as tmp:
            overrides_file = os.path.join(tmp, "overrides.json")
            with os.fdopen(os.open(overrides_file, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
                json.dump(overrides, f)
            command = [self.python, "-m", "k2e_core.cli", step, spec, "--overrides", overrides_file]
            for flag, value in kwargs.items():
                if value is not None:
                    command += [f"--{flag}", json.dumps(value)]
            stdout_path = os.path.join(tmp, "result.json")
            with open(stdout_path, "w") as stdout:
                last_line = self._stream(step, command, stdout)
            rc = self._child.returncode
            with open(stdout_path) as f:
                lines = f.read().strip().splitlines()
        if rc == 0 and lines:
            return json.loads(lines[-1])
        from k2e_core.errors import NOT_RETRYABLE

        message = last_line or f"k2e {step} exited with code {rc}"
        raise self._failure(
            AirflowFailException if rc in NOT_RETRYABLE else AirflowException, message
        )

    def _stream(self, step: str, command: list[str], stdout) -> str:
        """Runs `command`, its stderr (k2e's progress and errors) into the task log."""
        self.log.info("running k2e %s in %s", step, self.python)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._child = subprocess.Popen(
            command, stdout=stdout, stderr=subprocess.PIPE, text=True, env=env
        )
        last = ""
        for line in self._child.stderr:
            line = line.rstrip()
            if line:
                self.log.info("%s", line)
                last = line
        self._child.wait()
        return last


class K2eValidateOperator(K2eBaseOperator):
    """Checks the spec, the data files and model/data fit without training."""

    step = "validate"


class K2eConvertOperator(K2eBaseOperator):
    """Converts the Keras model to an Estimator and writes its warm-start checkpoint."""

    step = "convert"


class K2eTrainOperator(K2eBaseOperator):
    """Trains to `train.steps`; a retried or killed task resumes from the last checkpoint."""

    step = "train"


class K2eEvaluateOperator(K2eBaseOperator):
    """Evaluates the latest checkpoint; XCom `metrics` holds the results and, with an export
    section, `gate` the gate's decision (kept in the registry, so a retry gets the same)."""

    step = "evaluate"


class _PublishesModel(K2eBaseOperator):
    """Emits an Asset event through `model_asset_alias` for each blessed, published version.

    The event's asset is the export base (one asset per model, with `file://` for local
    paths); its extra holds the version, its path, the run, the metrics and the gate's
    reason. A DAG scheduled on `AssetAlias(model_asset_alias)` runs for every new serving
    version. A candidate the gate did not bless is kept under `candidates/` and emits no
    event; the task ends as skipped with the gate's reason (XCom `blessed` is False), so the
    grid shows it apart from a published version and downstream tasks are skipped too. A
    retried run gets the same decision, and is skipped again.

    :param skip_rejected: False: a candidate the gate did not bless ends the task as a
        success instead
    """

    operator_extra_links = (K2eTensorBoardLink(), K2eModelLink(), K2eReportLink())

    def __init__(
        self, *, model_asset_alias: str | None = None, skip_rejected: bool = True, **kwargs
    ):
        if model_asset_alias:
            kwargs["outlets"] = [*kwargs.get("outlets", []), AssetAlias(name=model_asset_alias)]
        super().__init__(**kwargs)
        self.model_asset_alias = model_asset_alias
        self.skip_rejected = skip_rejected

    def execute(self, context) -> dict:
        result = super().execute(context)
        if not result.get("blessed", True):
            message = (
                f"not blessed, so not published: {result.get('reason')}; the candidate is "
                f"kept at {result.get('candidate_path')}"
            )
            if self.skip_rejected:
                raise AirflowSkipException(message)
            self.log.warning("%s", message)
            return result
        if self.model_asset_alias:
            uri = _asset_uri(result["export_base"])
            context["outlet_events"][AssetAlias(name=self.model_asset_alias)].add(
                Asset(name=uri, uri=uri), extra=_event_extra(result)
            )
        return result


class K2eExportOperator(_PublishesModel):
    """Exports and verifies a SavedModel; the gate's decision publishes it as the next
    version or keeps it as a candidate (XCom `blessed`, `reason`, `version`).

    :param metrics: evaluation metrics to record in the version's manifest and the Asset
        event, e.g. `evaluate_task.output["metrics"]` (templated)
    """

    step = "export"
    template_fields: Sequence[str] = (*K2eBaseOperator.template_fields, "metrics")

    def __init__(self, *, metrics: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self.metrics = metrics

    def step_kwargs(self) -> dict:
        return {"metrics": self.metrics}


class K2eJobOperator(_PublishesModel):
    """Runs a whole job: convert, train, evaluate, export and publish.

    :param kubernetes: run the job as the spec's Kubeflow TFJob (its `cluster` section):
        submitted from this task, which waits for it and returns the version its chief
        published. The TFJob is named after the DAG, task and run, which is also its run id:
        a retry re-attaches to the same TFJob and publishes at most one version. This task
        needs the Kubernetes client and no TensorFlow.
    :param deferrable: with `kubernetes`, wait in Airflow's triggerer (TFJobTrigger) instead
        of a worker slot (default: `[operators] default_deferrable`)
    :param poll_interval: seconds between looks at the TFJob (default: the spec's
        `cluster.kubernetes.poll_secs`); the wait ends after the spec's `timeout_secs`
    :param kubernetes_conn_id: Airflow connection of the cluster, read through the
        cncf-kubernetes provider's KubernetesHook (default: none, `kube_config` instead)
    :param kube_config: kubeconfig file for `kubernetes` without a connection (default:
        in-cluster config, then $KUBECONFIG or ~/.kube/config)
    :param kube_context: context in that kubeconfig
    """

    step = "run"

    def __init__(
        self,
        *,
        kubernetes: bool = False,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float | None = None,
        kubernetes_conn_id: str | None = None,
        kube_config: str | None = None,
        kube_context: str | None = None,
        **kwargs,
    ):
        if kubernetes and kwargs.get("report"):
            raise ValueError(
                "report=True with kubernetes=True: the report reads the job's model with "
                "TensorFlow, which this task does not have; run k2e report in a later task "
                "(K2eEvaluateOperator(report=True, python=...))"
            )
        super().__init__(**kwargs)
        self.kubernetes = kubernetes
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.kubernetes_conn_id = kubernetes_conn_id
        self.kube_config = kube_config
        self.kube_context = kube_context
        self._tfjob_name = None
        self._tfjob_event: dict | None = None

    def execute(self, context) -> dict:
        if self.kubernetes:
            from k2e_core.distributed.tfjob import name_for

            self._tfjob_name = name_for(context["dag"].dag_id, self.task_id, context["run_id"])
            self.python = None  # the pods run TensorFlow; this task only submits and waits
            if self.deferrable and self._tfjob_event is None:
                self._defer_to_tfjob()
        return super().execute(context)

    def execute_complete(self, context, event: dict) -> dict:
        """Where a deferred task resumes once the trigger saw the TFJob end."""
        self._tfjob_event = event
        return self.execute(context)

    def _defer_to_tfjob(self) -> None:
        from airflow_plugin.triggers.tfjob import TFJobTrigger

        job, k8s = self._run("submit", self._overrides(), {})
        self.defer(
            trigger=TFJobTrigger(
                job=job,
                poll_interval=self.poll_interval or k8s.poll_secs,
                timeout=k8s.timeout_secs,
                kubernetes_conn_id=self.kubernetes_conn_id,
                kube_config=self.kube_config,
                kube_context=self.kube_context,
            ),
            method_name="execute_complete",
            kwargs={},
        )

    def _run_step(self, step: str, overrides: dict, kwargs: dict):
        if not self.kubernetes or step not in ("run", "submit"):
            return super()._run_step(step, overrides, kwargs)
        from airflow_plugin.triggers.tfjob import tfjob_api
        from k2e_core.distributed import tfjob
        from k2e_core.spec import load_spec

        spec = load_spec(self.spec, overrides)
        k8s = spec.cluster.kubernetes
        if self._tfjob_event is not None:  # resumed: the trigger saw the TFJob end
            return self._tfjob_outcome(spec, self._tfjob_event)
        api = tfjob_api(self.kubernetes_conn_id, self.kube_config, self.kube_context)
        if step == "submit":
            return tfjob.start(spec, self._tfjob_name, api=api), k8s
        job = tfjob.start(spec, self._tfjob_name, api=api)
        tfjob.wait(
            api,
            job["namespace"],
            job["name"],
            self.poll_interval or k8s.poll_secs,
            k8s.timeout_secs,
        )
        return tfjob.finished(spec, job)

    def _tfjob_outcome(self, spec, event: dict) -> dict:
        from k2e_core.distributed import tfjob
        from k2e_core.errors import K2eError

        job, state = event["job"], event["state"]
        namespace, name = job["namespace"], job["name"]
        if state == "Failed":
            raise tfjob.failed(namespace, name, event["condition"])
        if state == "timeout":
            timeout = spec.cluster.kubernetes.timeout_secs
            raise tfjob.timed_out(namespace, name, timeout, event["last"])
        if state != "Succeeded":
            raise K2eError(f"TFJob {namespace}/{name}: {event['message']}")
        return tfjob.finished(spec, job)


def _asset_uri(location: str) -> str:
    return location if "://" in location else "file://" + os.path.abspath(location)


def _event_extra(result: dict) -> dict:
    keys = (
        "version",
        "export_path",
        "manifest",
        "run_id",
        "metrics",
        "global_step",
        "reused",
        "reason",
    )
    return json.loads(json.dumps({k: result.get(k) for k in keys}, default=str))


def _kill_if_running(child: subprocess.Popen) -> None:
    if child.poll() is None:
        child.kill()


class K2ePredictOperator(K2eBaseOperator):
    """Predicts with a published version: `version` (its URL, templated), or the newest one
    published on `model_asset_alias` (the run's triggering asset event, else the newest event
    recorded for the alias). In this process, or in `python` (a worker without TensorFlow).
    XCom: `version`, `export_path`, `signature`, `outputs`.

    :param inputs: the rows (a list for one input, {input or feature: rows}) (templated)
    :param signature: the SavedModel signature (default: serving_default)
    """

    step = "predict"
    template_fields: Sequence[str] = ("version", "inputs", "python", "signature")
    operator_extra_links = ()

    def __init__(
        self,
        *,
        inputs,
        version: str | None = None,
        model_asset_alias: str | None = None,
        signature: str | None = None,
        **kwargs,
    ):
        if bool(version) == bool(model_asset_alias):
            raise ValueError("K2ePredictOperator takes version or model_asset_alias, one of them")
        if model_asset_alias:
            kwargs["inlets"] = [*kwargs.get("inlets", []), AssetAlias(name=model_asset_alias)]
        super().__init__(spec="", **kwargs)
        self.inputs = inputs
        self.version = version
        self.model_asset_alias = model_asset_alias
        self.signature = signature
        self._published: dict = {}

    def execute(self, context) -> dict:
        self._published = (
            {"export_path": self.version} if self.version else self._newest_event(context)
        )
        return super().execute(context)

    def _newest_event(self, context) -> dict:
        alias = AssetAlias(name=self.model_asset_alias)
        triggering = context.get("triggering_asset_events") or {}
        events = [e for evs in triggering.values() for e in evs]
        if not events:  # started by hand or on another schedule: the newest recorded
            recorded = context["inlet_events"][alias]
            events = [recorded[-1]] if len(recorded) else []
        if not events:
            raise self._failure(
                AirflowFailException,
                f"no version was published on {self.model_asset_alias} yet: run the DAG that "
                "publishes it first (not retried)",
            )
        return dict(events[-1].extra)

    def _cli_target(self) -> str:
        return self._published["export_path"]

    def step_kwargs(self) -> dict:
        return {"inputs": self.inputs, "signature": self.signature}

    def _run_step(self, step: str, overrides: dict, kwargs: dict) -> dict:
        from k2e_core.estimator.serving import predict_step

        return predict_step(self._published["export_path"], overrides, **kwargs)

    def _run(self, step: str, overrides: dict, kwargs: dict) -> dict:
        result = super()._run(step, overrides, kwargs)
        return {"version": self._published.get("version"), **result}

    def get_openlineage_facets_on_complete(self, task_instance):
        from airflow.providers.common.compat.openlineage.facet import Dataset
        from airflow.providers.openlineage.extractors import OperatorLineage

        from k2e_core.steps.lineage import dataset

        return OperatorLineage(
            inputs=[Dataset(namespace=n, name=name) for n, name in [dataset(self._cli_target())]]
        )
