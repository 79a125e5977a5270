"""The operators, executed directly on small data: templating, XCom, Asset events, errors,
credentials from connections, on_kill, and steps run in another interpreter."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from types import SimpleNamespace

import pytest
from airflow.sdk import AssetAlias
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from airflow.sdk.execution_time.context import OutletEventAccessors

from airflow_plugin.operators.k2e import (
    K2eConvertOperator,
    K2eEvaluateOperator,
    K2eExportOperator,
    K2eJobOperator,
    K2eTrainOperator,
    K2eValidateOperator,
)
from tests.conftest import BUCKET, REPO, on_s3


class RecordedXComs:
    """The task instance's `xcom_push`, keeping what the task runner would store (as JSON)."""

    def __init__(self):
        self.xcoms = {}

    def xcom_push(self, key, value):
        self.xcoms[key] = json.loads(json.dumps(value))


def task_context(**extra):
    return {"ti": RecordedXComs(), "outlet_events": OutletEventAccessors(), **extra}


def checkpoint_steps(model_dir):
    return sorted(
        int(p.rsplit("-", 1)[1].split(".")[0])
        for p in glob.glob(os.path.join(model_dir, "model.ckpt-*.index"))
    )


def test_template_fields_render_the_spec_overrides_urls_and_interpreter():
    op = K2eExportOperator(
        task_id="publish",
        spec="{{ params.specs }}/iris.yaml",
        overrides={
            "model_dir": "s3://models/{{ params.name }}/runs/{{ ds_nodash }}",
            "export.base": "gs://serving/{{ params.name }}",
            "data.train.files": ["{{ params.data }}/day={{ ds }}/*.csv"],
        },
        python="{{ params.venv }}/bin/python",
        metrics={"accuracy": "{{ params.accuracy }}"},
    )
    op.render_template_fields(
        {
            "params": {
                "specs": "/specs",
                "name": "iris",
                "venv": "/opt/tf",
                "data": "s3://raw",
                "accuracy": 0.9,
            },
            "ds": "2026-11-01",
            "ds_nodash": "20261101",
        }
    )
    assert op.spec == "/specs/iris.yaml"
    assert op.overrides == {
        "model_dir": "s3://models/iris/runs/20261101",
        "export.base": "gs://serving/iris",
        "data.train.files": ["s3://raw/day=2026-11-01/*.csv"],
    }
    assert op.python == "/opt/tf/bin/python"
    assert op.metrics == {"accuracy": "0.9"}


@pytest.mark.parametrize(
    "overrides, fix",
    [
        ({"model_dir": "/runs/{{ ds_nodash }}"}, "a run triggered by hand has no logical date"),
        ({"model_dir": "/runs/{{ params.nme }}"}, "fix the template"),
        ({"model_dir": "/runs/{{ params.name "}, "fix the template"),
    ],
    ids=["manual-run", "typo", "syntax"],
)
def test_a_template_that_cannot_render_fails_the_task_without_retries_naming_the_field(
    overrides, fix
):
    """A run triggered by hand (Airflow 3: logical_date null) has no `ds`: the same template
    fails on every retry, so it must not be retried, and the line says which field and why."""
    from datetime import datetime

    from airflow.sdk import DAG

    with DAG("k2e_templates", schedule=None, start_date=datetime(2026, 1, 1)):
        op = K2eTrainOperator(task_id="train", spec="/specs/iris.yaml", overrides=overrides)
    with pytest.raises(AirflowFailException) as failure:
        op.render_template_fields({"params": {"name": "iris"}, "dag_run": None})
    message = str(failure.value)
    assert message.startswith("train: field 'overrides' cannot be rendered: ")
    assert fix in message and message.endswith("(not retried)") and "\n" not in message


def test_inline_spec_renders_every_url_inside_it(iris_spec):
    spec = {
        **iris_spec,
        "model_dir": "{{ params.root }}/model",
        "export": {"base": "{{ params.root }}/serving"},
    }
    op = K2eJobOperator(task_id="job", spec=spec)
    op.render_template_fields({"params": {"root": "memory://run-7"}})
    assert op.spec["model_dir"] == "memory://run-7/model"
    assert op.spec["export"]["base"] == "memory://run-7/serving"
    assert op.spec["data"] == iris_spec["data"]


def lineage(op) -> tuple[list, list]:
    """What the OpenLineage provider reads off a finished task: (inputs, outputs)."""
    facets = op.get_openlineage_facets_on_complete(None)
    return (
        [(d.namespace, d.name) for d in facets.inputs],
        [(d.namespace, d.name) for d in facets.outputs],
    )


def test_each_step_operator_on_small_data_and_its_lineage(iris_spec, tmp_path):
    """Each step's result as XCom, and its OpenLineage inputs and outputs: the data files it
    read, the model_dir it read or wrote, the version it published."""
    spec = dict(iris_spec)
    train_csv = ("file", spec["data"]["train"]["files"])
    eval_csv = ("file", spec["data"]["eval"]["files"])
    model_dir = ("file", spec["model_dir"])
    op = K2eValidateOperator(task_id="validate", spec=spec)
    validated = op.execute(task_context())
    assert validated["valid"] and validated["labels"] == {"dense_1": ["species"]}
    assert lineage(op) == ([train_csv, eval_csv], [])

    ctx = task_context()
    op = K2eConvertOperator(task_id="convert", spec=spec)
    converted = op.execute(ctx)
    assert converted["global_step"] == 0
    assert ctx["ti"].xcoms["model_dir"] == iris_spec["model_dir"] == converted["model_dir"]
    assert lineage(op) == ([], [model_dir])

    ctx = task_context()
    op = K2eTrainOperator(
        task_id="train", spec=spec, overrides={"model_dir": converted["model_dir"]}
    )
    trained = op.execute(ctx)
    assert trained["global_step"] == 60
    assert ctx["ti"].xcoms["checkpoint"].endswith("model.ckpt-60")
    assert lineage(op) == ([train_csv, model_dir], [model_dir])

    ctx = task_context()
    op = K2eEvaluateOperator(task_id="evaluate", spec=spec)
    evaluated = op.execute(ctx)
    assert ctx["ti"].xcoms["metrics"]["global_step"] == 60
    assert 0.0 <= evaluated["metrics"]["accuracy"] <= 1.0
    assert lineage(op) == ([eval_csv, model_dir], [])

    op = K2eExportOperator(
        task_id="publish", spec=spec, metrics=evaluated["metrics"], model_asset_alias="iris-model"
    )
    assert AssetAlias(name="iris-model") in op.outlets
    ctx = task_context()
    published = op.execute(ctx)
    assert published["version"] == 1 and os.path.exists(
        os.path.join(published["export_path"], "saved_model.pb")
    )
    assert lineage(op) == ([eval_csv, model_dir], [("file", published["export_path"])])
    manifest = json.loads(open(published["manifest"]).read())
    assert manifest["metrics"] == evaluated["metrics"]
    (event,) = ctx["outlet_events"][AssetAlias(name="iris-model")].asset_alias_events
    assert event.dest_asset_key.uri == "file://" + iris_spec["export"]["base"]
    assert event.extra["version"] == 1 and event.extra["metrics"] == evaluated["metrics"]
    assert event.extra["export_path"] == published["export_path"]


@pytest.mark.parametrize(
    "url, expected",
    [
        ("s3://raw/iris/2026-11-01/*.csv", ("s3://raw", "iris/2026-11-01")),
        ("gs://serving/iris/3", ("gs://serving", "iris/3")),
        ("gcs://serving/iris/3/", ("gs://serving", "iris/3")),
        ("/data/day=*/part-*.tfrecord.gz", ("file", "/data")),
        ("file:///data/iris.csv", ("file", "/data/iris.csv")),
    ],
)
def test_lineage_names_datasets_as_openlineage_does(url, expected):
    from k2e_core.steps.lineage import dataset

    assert dataset(url) == expected


def test_job_operator_in_another_interpreter_streams_progress_and_returns_xcom(iris_spec, capfd):
    op = K2eJobOperator(
        task_id="job", spec=iris_spec, python=sys.executable, model_asset_alias="iris-model"
    )
    ctx = task_context()
    result = op.execute(ctx)
    assert result["version"] == 1 and result["global_step"] == 60
    assert ctx["ti"].xcoms["metrics"] == result["metrics"]
    assert (
        ctx["outlet_events"][AssetAlias(name="iris-model")].asset_alias_events[0].extra["version"]
        == 1
    )
    logged = capfd.readouterr()
    assert "step 60/60" in logged.out + logged.err  # the child's progress, in the task log


def test_a_step_in_another_interpreter_imports_no_tensorflow_in_the_worker(iris_spec):
    code = (
        "import json, sys\n"
        "from airflow_plugin.operators.k2e import K2eValidateOperator\n"
        "from tests.airflow.test_operators import task_context\n"
        f"op = K2eValidateOperator(task_id='v', spec={json.dumps(iris_spec)!r}, "
        "python=sys.executable)\n"
        "result = op.execute(task_context())\n"
        "print(json.dumps([result['valid'], sorted(m for m in ('tensorflow', 'keras', "
        "'k2e_core.steps.job') if m in sys.modules)]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [True, []]


@pytest.mark.parametrize("python", [None, sys.executable], ids=["here", "interpreter"])
@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"nonsense": 1}, "nonsense: unknown field; remove it or fix its spelling"),
        (
            {"data.train.files": "/no/such/*.csv"},
            "data.train.files: no file matches /no/such/*.csv",
        ),
    ],
    ids=["unknown-field", "missing-data"],
)
def test_bad_input_fails_the_task_with_one_clear_line(
    iris_spec, python, overrides, expected, capfd
):
    op = K2eValidateOperator(task_id="validate", spec=iris_spec, overrides=overrides, python=python)
    with pytest.raises(AirflowFailException) as raised:  # no retries for bad input
        op.execute(task_context())
    message = str(raised.value)
    assert expected in message and "\n" not in message
    assert expected in capfd.readouterr().out.replace("\n", " ")  # logged ahead of the traceback


@pytest.mark.parametrize("python", [None, sys.executable], ids=["here", "interpreter"])
def test_a_diverging_job_fails_the_task_without_retries(iris_spec, python, tmp_path):
    """A rerun diverges the same way: like bad input, the failure is not retried."""
    from tests.core.test_cli import DIVERGING

    (tmp_path / "diverging.py").write_text(DIVERGING)
    op = K2eJobOperator(
        task_id="job",
        spec=iris_spec,
        python=python,
        overrides={"model.factory": str(tmp_path / "diverging.py") + ":build"},
    )
    with pytest.raises(AirflowFailException, match=r"training diverged: the loss is NaN at step "):
        op.execute(task_context())
    assert not os.path.exists(iris_spec["export"]["base"])


def test_overrides_that_are_not_key_value_are_named(iris_spec):
    op = K2eValidateOperator(task_id="validate", spec=iris_spec, overrides=["train.steps 5"])
    with pytest.raises(AirflowFailException, match="overrides: 'train.steps 5' is not KEY=VALUE"):
        op.execute(task_context())


def test_a_connection_that_does_not_exist_is_named(iris_spec):
    op = K2eTrainOperator(task_id="train", spec=iris_spec, storage_conn_id="k2e_missing")
    with pytest.raises(
        AirflowFailException, match="storage_conn_id: connection 'k2e_missing' does not exist"
    ):
        op.execute(task_context())


def test_credentials_from_a_connection_reach_s3_but_never_logs_or_xcom(
    iris_spec, s3, s3_server, monkeypatch, capfd, caplog
):
    secret = f"k2e-secret-{uuid.uuid4().hex}"
    monkeypatch.setenv(
        "AIRFLOW_CONN_K2E_TEST_S3",
        json.dumps(
            {
                "conn_type": "aws",
                "login": "k2e-test-key",
                "password": secret,
                "extra": {"endpoint_url": s3_server.endpoint, "region_name": "us-east-1"},
            }
        ),
    )
    spec = {
        **iris_spec,
        "model_dir": f"s3://{BUCKET}/conn/model",
        "export": {"base": f"s3://{BUCKET}/conn/serving"},
    }
    ctx = task_context()
    result = K2eJobOperator(
        task_id="job", spec=spec, storage_conn_id="k2e_test_s3", model_asset_alias="iris-model"
    ).execute(ctx)
    assert result["export_path"] == f"s3://{BUCKET}/conn/serving/1"
    logged = capfd.readouterr()
    for text in (
        logged.out,
        logged.err,
        caplog.text,
        json.dumps(ctx["ti"].xcoms),
        json.dumps(ctx["outlet_events"][AssetAlias(name="iris-model")].asset_alias_events[0].extra),
    ):
        assert secret not in text


def _execute_in_thread(op, ctx):
    outcome = {}

    def target():
        try:
            outcome["result"] = op.execute(ctx)
        except BaseException as err:  # noqa: BLE001 - handed to the test
            outcome["error"] = err

    thread = threading.Thread(target=target)
    thread.start()
    return thread, outcome


def _wait_for_checkpoint(model_dir, step, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(s >= step for s in checkpoint_steps(model_dir)):
            return
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint at step >= {step} in {model_dir}")


@pytest.mark.slow
@pytest.mark.parametrize("python", [None, sys.executable], ids=["here", "interpreter"])
def test_on_kill_stops_training_within_seconds_and_a_retry_resumes_and_publishes_once(
    iris_spec, python
):
    total = 8000
    overrides = {"train.steps": total, "run_config.save_checkpoints_steps": 500}
    op = K2eJobOperator(
        task_id="job", spec=iris_spec, overrides=overrides, python=python, stop_timeout=30
    )
    thread, outcome = _execute_in_thread(op, task_context())
    _wait_for_checkpoint(iris_spec["model_dir"], 500)
    killed_at = time.monotonic()
    op.on_kill()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert time.monotonic() - killed_at < 10
    assert isinstance(outcome.get("error"), AirflowException), outcome
    assert "training stopped on request at step" in str(outcome["error"])
    stopped_at = checkpoint_steps(iris_spec["model_dir"])[-1]
    assert 500 <= stopped_at < total
    assert not os.path.exists(iris_spec["export"]["base"])  # nothing published

    retry = K2eJobOperator(task_id="job", spec=iris_spec, overrides=overrides, python=python)
    result = retry.execute(task_context())
    assert result["global_step"] == total
    assert result["train"]["steps_trained"] == total - stopped_at  # resumed, not restarted
    assert (result["version"], result["reused"]) == (1, False)
    again = retry.execute(task_context())
    assert (again["version"], again["reused"]) == (1, True)
    assert [n for n in os.listdir(iris_spec["export"]["base"]) if n.isdigit()] == ["1"]


@pytest.mark.slow
def test_job_operator_on_kubernetes_submits_the_tfjob_waits_and_publishes_once(
    iris_spec, s3, tmp_path
):
    """`kubernetes=True`: the task submits the spec's TFJob through the Kubernetes client
    (here to a local stand-in for the API server and training operator, which runs every
    replica's command with its TF_CONFIG), waits, and returns the chief's version."""
    from tests.cluster.training_operator import ApiServer

    spec = on_s3(
        iris_spec,
        s3,
        cluster={
            "workers": 1,
            "ps": 1,
            "kubernetes": {
                "image": "registry.example/k2e:0.1.0",
                "shared_volume": "k2e-shared",
                "poll_secs": 0.5,
            },
        },
    )
    root = spec["model_dir"].rsplit("/", 1)[0]
    with ApiServer(str(tmp_path / "volume")) as api_server:
        op = K2eJobOperator(
            task_id="train_on_k8s",
            spec=spec,
            kubernetes=True,
            kube_config=api_server.kubeconfig(tmp_path / "kubeconfig"),
            model_asset_alias="iris-model",
        )
        ctx = task_context(
            dag=SimpleNamespace(dag_id="iris_nightly"),
            run_id="scheduled__2026-11-20T00:00:00+00:00",
        )
        result = op.execute(ctx)
        retried = op.execute(task_context(dag=ctx["dag"], run_id=ctx["run_id"]))
        (name,) = api_server.created
    assert name.startswith("k2e-iris-nightly-train-on-k8s-") and len(name) <= 47
    assert result["version"] == 1 and result["run_id"] == name and result["tfjob"].endswith(name)
    assert ctx["ti"].xcoms["version"] == 1 and ctx["ti"].xcoms["export_path"] == f"{root}/export/1"
    (event,) = ctx["outlet_events"][AssetAlias(name="iris-model")].asset_alias_events
    assert event.extra["version"] == 1 and event.dest_asset_key.uri == f"{root}/export"
    assert retried["version"] == 1 and not retried["submitted"]  # re-attached, nothing new


@pytest.mark.slow
def test_a_deferred_job_waits_in_the_triggerer_through_a_kubernetes_connection(
    iris_spec, s3, tmp_path, monkeypatch
):
    """`deferrable=True`: the task submits the TFJob and defers; the trigger, rebuilt from
    its serialized form as the triggerer does, polls the TFJob through the cncf-kubernetes
    KubernetesHook of `kubernetes_conn_id`; a fresh operator resumes in `execute_complete`
    and publishes the chief's version."""
    import asyncio

    from airflow.sdk.exceptions import TaskDeferred
    from airflow.sdk.module_loading import import_string

    from airflow_plugin.get_provider_info import get_provider_info
    from tests.cluster.training_operator import ApiServer

    spec = on_s3(
        iris_spec,
        s3,
        cluster={
            "kubernetes": {"image": "registry.example/k2e:0.1.0", "shared_volume": "k2e-shared"}
        },
    )
    root = spec["model_dir"].rsplit("/", 1)[0]

    def operator():
        return K2eJobOperator(
            task_id="train_on_k8s",
            spec=spec,
            kubernetes=True,
            deferrable=True,
            poll_interval=0.2,
            kubernetes_conn_id="k2e_cluster",
            model_asset_alias="iris-model",
        )

    async def first_event(trigger):
        async for event in trigger.run():
            return event

    with ApiServer(str(tmp_path / "volume")) as api_server:
        extra = {"kube_config_path": api_server.kubeconfig(tmp_path / "kubeconfig")}
        monkeypatch.setenv(
            "AIRFLOW_CONN_K2E_CLUSTER", json.dumps({"conn_type": "kubernetes", "extra": extra})
        )
        ctx = task_context(dag=SimpleNamespace(dag_id="iris_nightly"), run_id="manual__1")
        with pytest.raises(TaskDeferred) as deferred:
            operator().execute(ctx)
        assert deferred.value.method_name == "execute_complete"
        (name,) = api_server.created
        assert api_server.jobs[("default", name)]["status"]["conditions"][-1]["type"] != (
            "Succeeded"
        )  # the task deferred while the TFJob was still running
        classpath, kwargs = deferred.value.trigger.serialize()
        assert "airflow_plugin.triggers.tfjob" in {
            m for t in get_provider_info()["triggers"] for m in t["python-modules"]
        }
        event = asyncio.run(first_event(import_string(classpath)(**kwargs)))
        assert event.payload["state"] == "Succeeded"
        result = operator().execute_complete(ctx, event.payload)
        assert api_server.created == [name]  # resuming submitted nothing new
    assert result["version"] == 1 and result["tfjob"] == f"default/{name}"
    assert ctx["ti"].xcoms["export_path"] == f"{root}/export/1"
    (asset_event,) = ctx["outlet_events"][AssetAlias(name="iris-model")].asset_alias_events
    assert asset_event.extra["version"] == 1


def test_a_tfjob_that_failed_while_deferred_fails_the_task_with_its_condition(iris_spec):
    from k2e_core.distributed.tfjob import name_for

    op = K2eJobOperator(task_id="job", spec=iris_spec, kubernetes=True, deferrable=True)
    name = name_for("iris_nightly", "job", "manual__1")
    job = {"namespace": "default", "name": name, "submitted": True}
    ctx = task_context(dag=SimpleNamespace(dag_id="iris_nightly"), run_id="manual__1")
    condition = {"type": "Failed", "reason": "TFJobFailed", "message": "chief exited 3"}
    with pytest.raises(AirflowException) as failed:
        op.execute_complete(ctx, {"job": job, "state": "Failed", "condition": condition})
    assert str(failed.value) == (
        f"k2e run: failed: TFJob default/{name} failed: TFJobFailed chief exited 3; a "
        "resubmission "
        "of the same name resumes from the last checkpoint"
    )
    with pytest.raises(AirflowException, match="did not finish within 60s .last state: Running"):
        spec = {**iris_spec, "cluster": {"kubernetes": {"timeout_secs": 60}}}
        K2eJobOperator(task_id="job", spec=spec, kubernetes=True, deferrable=True).execute_complete(
            ctx, {"job": job, "state": "timeout", "last": "Running"}
        )


def test_a_job_links_tensorboard_the_version_and_the_report_and_logs_its_metrics(
    iris_spec, monkeypatch, capfd
):
    """The task page's extra links (stored by the task runner from `get_link` when the task
    ends): TensorBoard from the `[k2e]` configuration's template, the published version,
    the report written after the job. The log's summary line has the outcome and metrics."""
    monkeypatch.setenv(
        "AIRFLOW__K2E__TENSORBOARD_URL", "https://tensorboard.example.com/#scalars&dir={model_dir}"
    )
    op = K2eJobOperator(task_id="job", spec=iris_spec, report=True)
    assert [link.name for link in op.operator_extra_links] == [
        "TensorBoard",
        "Published version",
        "k2e report",
    ]
    ctx = task_context()
    result = op.execute(ctx)
    links = {link.name: link.get_link(op, ti_key=None) for link in op.operator_extra_links}
    assert links == {
        "TensorBoard": "https://tensorboard.example.com/#scalars&dir=" + iris_spec["model_dir"],
        "Published version": "file://" + result["export_path"],
        "k2e report": "file://" + os.path.join(iris_spec["model_dir"], "report.html"),
    }
    assert ctx["ti"].xcoms["report"] == os.path.join(iris_spec["model_dir"], "report.html")
    assert "<img " in open(ctx["ti"].xcoms["report"]).read()
    logged = capfd.readouterr()
    (line,) = [x for x in (logged.out + logged.err).splitlines() if "k2e run: " in x]
    line = line[line.index("k2e run: ") :]
    assert line.startswith("k2e run: version 1 published (no gate metrics set); accuracy ")
    assert "loss " in line and "; step 60; " in line and " steps/s" in line
    # a template on the operator wins over the configuration's; fields are URL-quoted
    op = K2eTrainOperator(task_id="t", spec=iris_spec, tensorboard_url="https://tb/{model_dir}")
    assert op._link_templates()["tensorboard_url"] == "https://tb/{model_dir}"
    from airflow_plugin.links.k2e import links_for

    assert links_for({"model_dir": "s3://b/a run"}, op._link_templates()) == {
        "TensorBoard": "https://tb/s3://b/a%20run"
    }


@pytest.mark.slow
@pytest.mark.parametrize("python", [None, sys.executable], ids=["here", "interpreter"])
def test_a_rejected_candidate_skips_the_task_with_the_gate_reason_and_a_retry_too(
    retraining_spec, example_data, tmp_path, python
):
    """Before: a candidate the gate rejected was a green success with one WARNING line."""
    from airflow.sdk.exceptions import AirflowSkipException

    from k2e_core.spec import apply_overrides
    from tests.conftest import retraining_day

    K2eJobOperator(task_id="day1", spec=retraining_spec).execute(task_context())
    day3 = apply_overrides(retraining_spec, retraining_day(3, example_data, tmp_path))
    reasons = []
    for _ in range(2):  # a retry of the same run gets the same decision
        ctx = task_context()
        op = K2eJobOperator(task_id="day3", spec=day3, python=python, report=True)
        with pytest.raises(AirflowSkipException, match="not blessed, so not published: ") as e:
            op.execute(ctx)
        reasons.append(str(e.value))
        assert ctx["ti"].xcoms["blessed"] is False
        assert "candidates/day3" in ctx["ti"].xcoms["candidate_path"]
        assert set(op.k2e_links) == {"k2e report"}  # nothing was published
    assert reasons[0] == reasons[1] and "(baseline version 1:" in reasons[0]
    kept = K2eJobOperator(task_id="day3", spec=day3, skip_rejected=False).execute(task_context())
    assert kept["blessed"] is False


def test_a_report_from_a_task_without_tensorflow_is_refused_when_the_dag_is_parsed():
    with pytest.raises(ValueError, match="report=True with kubernetes=True: the report reads"):
        K2eJobOperator(task_id="job", spec="job.yaml", kubernetes=True, report=True)


def test_a_misconfigured_python_is_one_line_naming_it_and_not_retried(tmp_path, monkeypatch):
    """A `python` that does not run, one without k2e, one with another k2e: each a
    configuration error (AirflowFailException: no retry), said before any step runs."""
    from airflow.sdk.exceptions import AirflowFailException

    from airflow_plugin.operators.k2e import K2eTrainOperator
    from k2e_core import __version__

    other = tmp_path / "python-with-another-k2e"
    other.write_text("#!/bin/sh\necho 0.0.9\n")
    other.chmod(0o755)
    monkeypatch.chdir(tmp_path)  # not the checkout: its k2e_core/ would be importable
    cases = {
        "/opt/nowhere/bin/python": "python: /opt/nowhere/bin/python cannot be run "
        "(No such file or directory); point python at the interpreter of a virtualenv",
        sys._base_executable: f"python: {sys._base_executable} has no k2e "
        "(ModuleNotFoundError: No module named 'k2e_core'); point python at",
        str(other): f"python: {other} has k2e 0.0.9, this worker k2e {__version__}; "
        "install the same k2e version in both (not retried)",
    }
    for python, expected in cases.items():
        op = K2eTrainOperator(task_id="train", spec=str(tmp_path / "job.yaml"), python=python)
        with pytest.raises(AirflowFailException) as caught:
            op._run("train", {}, {})
        assert str(caught.value).startswith(expected), caught.value
        assert "\n" not in str(caught.value)
