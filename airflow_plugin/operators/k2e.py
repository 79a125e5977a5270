"""Operators for the steps of a k2e job. Each one runs the core's step and returns its JSON
result as XCom, each top-level field also under its own key, so the next task reads
`train.output["model_dir"]`, `evaluate.output["metrics"]`, `publish.output["version"]`.

    K2eValidateOperator   spec, files and model/data fit, without training
    K2eConvertOperator    Keras model -> Estimator, warm-start checkpoint in model_dir
    K2eTrainOperator      train to train.steps (a retry resumes from the last checkpoint)
    K2eEvaluateOperator   evaluate the latest checkpoint; the gate decides on the candidate
    K2eExportOperator     export, verify, and publish a blessed version (or keep a candidate)
    K2eJobOperator        all of the above in one task

`spec` is a job spec: a dict, or the path/URL of a YAML/JSON file. `overrides` is
`{"train.steps": 200, ...}` (or `["train.steps=200", ...]`). Both are templated, values
inside them too, so run-dependent locations (`{{ ds_nodash }}`) and XComArgs work.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from typing import Any

from airflow.sdk import Asset, AssetAlias, BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowNotFoundException


class K2eBaseOperator(BaseOperator):
    """Runs one step of a k2e job: in this process, or in another interpreter (`python`).

    :param spec: job spec, a dict or a YAML/JSON path or URL (templated)
    :param overrides: spec fields to override, `{"a.b": value}` or `["a.b=value"]` (templated)
    :param storage_conn_id: Airflow connection whose credentials become the job's fsspec
        storage options (aws, google_cloud_platform or k2e_storage); never logged or returned
    :param python: interpreter of a virtualenv holding k2e and TensorFlow 2.15, for workers
        that cannot carry TensorFlow themselves (templated)
    :param stop_timeout: seconds a step in `python` gets to save a checkpoint after the task
        is killed, before it is killed too
    """

    step: str = ""
    template_fields: Sequence[str] = ("spec", "overrides", "python")
    template_fields_renderers = {"spec": "json", "overrides": "json"}
    ui_color = "#fde4c4"

    def __init__(
        self,
        *,
        spec: str | dict,
        overrides: dict[str, Any] | list[str] | None = None,
        storage_conn_id: str | None = None,
        python: str | None = None,
        stop_timeout: float = 60,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.spec = spec
        self.overrides = overrides
        self.storage_conn_id = storage_conn_id
        self.python = python
        self.stop_timeout = stop_timeout
        self._child: subprocess.Popen | None = None

    def execute(self, context) -> dict:
        overrides = self._overrides()
        if self.python:
            result = self._run_in_interpreter(overrides)
        else:
            result = self._run_here(overrides)
        self.log.info("k2e %s: %s", self.step, json.dumps(_summary(result), default=str))
        for key, value in result.items():  # `task.output["model_dir"]` in downstream tasks
            context["ti"].xcom_push(key=key, value=value)
        return result

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
        training = sys.modules.get("k2e_core.estimator.training")
        if training is not None:
            training.request_stop()

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
    def _run_here(self, overrides: dict) -> dict:
        from k2e_core.errors import describe

        try:
            return self._run_step(overrides)
        except Exception as err:
            failure = describe(err)  # bad input and repeatable failures are not retried
            kind = AirflowException if failure.retryable else AirflowFailException
            raise self._failure(kind, f"k2e {self.step}: {failure.line}") from (
                None if failure.expected else err
            )

    def _run_step(self, overrides: dict) -> dict:
        from k2e_core.steps.job import STEPS

        return STEPS[self.step](self.spec, overrides, **self.step_kwargs())

    def _failure(self, kind, message: str) -> Exception:
        """The error, also logged as one line ahead of Airflow's traceback."""
        self.log.error("%s", message)
        return kind(message)

    def _run_in_interpreter(self, overrides: dict) -> dict:
        spec = self.spec if isinstance(self.spec, str) else json.dumps(self.spec)
        with tempfile.TemporaryDirectory(prefix="k2e-task-") as tmp:
            overrides_file = os.path.join(tmp, "overrides.json")
            with os.fdopen(os.open(overrides_file, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
                json.dump(overrides, f)
            command = [
                self.python,
                "-m",
                "k2e_core.cli",
                self.step,
                spec,
                "--overrides",
                overrides_file,
            ]
            for flag, value in self.step_kwargs().items():
                if value is not None:
                    command += [f"--{flag}", json.dumps(value)]
            stdout_path = os.path.join(tmp, "result.json")
            with open(stdout_path, "w") as stdout:
                last_line = self._stream(command, stdout)
            rc = self._child.returncode
            with open(stdout_path) as f:
                lines = f.read().strip().splitlines()
        if rc == 0 and lines:
            return json.loads(lines[-1])
        from k2e_core.errors import NOT_RETRYABLE

        message = last_line or f"k2e {self.step} exited with code {rc}"
        raise self._failure(
            AirflowFailException if rc in NOT_RETRYABLE else AirflowException, message
        )

    def _stream(self, command: list[str], stdout) -> str:
        """Runs `command`, its stderr (k2e's progress and errors) into the task log."""
        self.log.info("running k2e %s in %s", self.step, self.python)
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
    event; the task still succeeds (the gate did its job) and XCom `blessed` is False.
    """

    def __init__(self, *, model_asset_alias: str | None = None, **kwargs):
        if model_asset_alias:
            kwargs["outlets"] = [*kwargs.get("outlets", []), AssetAlias(name=model_asset_alias)]
        super().__init__(**kwargs)
        self.model_asset_alias = model_asset_alias

    def execute(self, context) -> dict:
        result = super().execute(context)
        if not result.get("blessed", True):
            self.log.warning(
                "not blessed, so not published: %s; the candidate is kept at %s",
                result.get("reason"),
                result.get("candidate_path"),
            )
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
    :param kube_config: kubeconfig file for `kubernetes` (default: in-cluster config, then
        $KUBECONFIG or ~/.kube/config)
    :param kube_context: context in that kubeconfig
    """

    step = "run"

    def __init__(
        self,
        *,
        kubernetes: bool = False,
        kube_config: str | None = None,
        kube_context: str | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.kubernetes = kubernetes
        self.kube_config = kube_config
        self.kube_context = kube_context
        self._tfjob_name = None

    def execute(self, context) -> dict:
        if self.kubernetes:
            from k2e_core.distributed.tfjob import name_for

            self._tfjob_name = name_for(context["dag"].dag_id, self.task_id, context["run_id"])
            self.python = None  # the pods run TensorFlow; this task only submits and waits
        return super().execute(context)

    def _run_step(self, overrides: dict) -> dict:
        if not self.kubernetes:
            return super()._run_step(overrides)
        from k2e_core.distributed import tfjob
        from k2e_core.spec import load_spec

        return tfjob.run(
            load_spec(self.spec, overrides),
            self._tfjob_name,
            kube_config=self.kube_config,
            context=self.kube_context,
        )


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


def _summary(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in ("train", "inputs", "outputs")}


def _kill_if_running(child: subprocess.Popen) -> None:
    if child.poll() is None:
        child.kill()
