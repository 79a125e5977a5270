"""The KFP components and pipeline: compiled and parsed into PipelineSpec, and run end to end
with KFP's local runner (SubprocessRunner, no venv) on small data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import yaml

from tests.conftest import REPO, on_s3, retraining_day


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    path = tmp_path_factory.mktemp("kfp") / "k2e-training.yaml"
    code = (
        "import sys; from kfp_components.compile import main; main([sys.argv[1]]); "
        "print('tensorflow' in sys.modules)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, "K2E_IMAGE": "registry.example/k2e:0.1.0"},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "False"  # compiled without TensorFlow
    return path


def test_compiled_pipeline_parses_into_a_pipeline_spec(compiled):
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    spec = json_format.ParseDict(
        yaml.safe_load(compiled.read_text()), pipeline_spec_pb2.PipelineSpec()
    )
    assert spec.pipeline_info.name == "k2e-training"
    tasks = spec.root.dag.tasks
    assert {name: sorted(t.dependent_tasks) for name, t in tasks.items()} == {
        "convert": [],
        "train": ["convert"],
        "evaluate": ["train"],
        "export": ["evaluate", "train"],
    }
    params = spec.root.input_definitions.parameters
    kinds = {
        name: pipeline_spec_pb2.ParameterType.ParameterTypeEnum.Name(p.parameter_type)
        for name, p in params.items()
    }
    assert kinds == {
        "spec": "STRING",
        "train_files": "STRING",
        "eval_files": "STRING",
        "train_steps": "NUMBER_INTEGER",
        "export_base": "STRING",
        "warm_start": "STRING",
        "overrides": "STRING",
    }
    images = {e.container.image for e in _executors(spec)}
    assert images == {"registry.example/k2e:0.1.0"}
    outputs = spec.root.output_definitions.artifacts
    assert {n: a.artifact_type.schema_title for n, a in outputs.items()} == {
        "model": "system.Model",
        "checkpoints": "system.Artifact",
        "metrics": "system.Metrics",
        "classification": "system.ClassificationMetrics",
        "report": "system.HTML",
    }


def _compile_every_pipeline(out, *args, image=None):
    """The three pipelines compiled by the compile command, as a user runs it, and read as
    a cluster reads them: ({name: IR dict}, the finished process)."""
    code = (
        "import sys; from kfp_components.compile import main\n"
        "for name in ('training', 'job', 'tfjob'):\n"
        "    code = main([f'{sys.argv[1]}/{name}.yaml', '--pipeline', name, *sys.argv[2:]])\n"
        "    if code: sys.exit(code)\n"
        "print('tensorflow' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "K2E_IMAGE"}
    proc = subprocess.run(
        [sys.executable, "-c", code, str(out), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**env, **({"K2E_IMAGE": image} if image else {})},
    )
    irs = {}
    for name in ("training", "job", "tfjob") if proc.returncode == 0 else ():
        # The pipeline spec, then (when a task has Kubernetes settings) the platform spec.
        documents = list(yaml.safe_load_all((out / f"{name}.yaml").read_text()))
        irs[name] = {k: v for document in documents for k, v in document.items()}
    return irs, proc


@pytest.fixture(scope="module")
def every_pipeline(tmp_path_factory):
    """The three pipelines compiled with k2e's defaults: {name: IR dict}."""
    irs, proc = _compile_every_pipeline(tmp_path_factory.mktemp("kfp-all"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-1] == "False"  # compiled without TensorFlow
    assert "placeholder image registry.example.com/k2e:0.1.0" in proc.stderr
    return irs


def _executor_resources(ir):
    """{task name: its container's resources} of a compiled pipeline."""
    executors = ir["deploymentSpec"]["executors"]
    tasks = ir["root"]["dag"]["tasks"]
    return {
        name: executors[ir["components"][t["componentRef"]["name"]]["executorLabel"]][
            "container"
        ].get("resources", {})
        for name, t in tasks.items()
    }


def _kubernetes_config(ir):
    """{task name: its KubernetesExecutorConfig}, parsed by kfp-kubernetes' own proto, as
    the KFP backend's driver reads the platform spec."""
    from google.protobuf import json_format
    from kfp.kubernetes import kubernetes_executor_config_pb2 as pb

    executors = ir.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {})
    executors = executors.get("executors", {})
    tasks = ir["root"]["dag"]["tasks"]
    configs = {}
    for name, t in tasks.items():
        label = ir["components"][t["componentRef"]["name"]]["executorLabel"]
        configs[name] = json_format.ParseDict(
            executors.get(label, {}), pb.KubernetesExecutorConfig()
        )
    return configs


def test_every_task_requests_cpu_and_memory_and_retries_once_by_default(every_pipeline):
    """Without requests a pod is the first evicted and may land on a full node; the memory
    limit is the request (no CPU limit: throttling slows TensorFlow)."""
    for name, ir in every_pipeline.items():
        for task, resources in _executor_resources(ir).items():
            assert resources["resourceCpuRequest"], (name, task)
            assert resources["resourceMemoryLimit"] == resources["resourceMemoryRequest"]
            assert "resourceCpuLimit" not in resources
            retry = ir["root"]["dag"]["tasks"][task]["retryPolicy"]
            assert (retry["maxRetryCount"], retry["backoffDuration"]) == (1, "30s")
        assert all(not c.secret_as_env for c in _kubernetes_config(ir).values())
    trainer = _executor_resources(every_pipeline["training"])
    assert (trainer["train"]["resourceCpuRequest"], trainer["convert"]["resourceCpuRequest"]) == (
        "2",
        "1",
    )
    assert _executor_resources(every_pipeline["job"])["run-job"]["resourceMemoryRequest"] == "4Gi"


TASKS_FILE = """
all: {memory: 3Gi, retries: 2}
train:
  cpu: "6"
  memory: 24Gi
  accelerator: nvidia.com/gpu
  accelerators: 2
  timeout_secs: 21600
  node_selector: {cloud.google.com/gke-accelerator: nvidia-l4}
  tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
run_job: {accelerator: nvidia.com/gpu}
export: {retries: 0}
credentials: {secret: k2e-storage}
"""


def test_a_tasks_file_sets_each_tasks_resources_retries_timeout_and_credentials(tmp_path):
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text(TASKS_FILE)
    irs, proc = _compile_every_pipeline(
        tmp_path, "--tasks", str(tasks), image="registry.example/ml/k2e:0.1.0"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-1] == "False" and "placeholder" not in proc.stderr

    training = irs["training"]
    resources = _executor_resources(training)
    assert resources["train"]["resourceCpuRequest"] == "6"
    assert resources["train"]["resourceMemoryRequest"] == "24Gi"
    assert resources["train"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert resources["train"]["accelerator"]["resourceCount"] == "2"
    assert resources["evaluate"]["resourceMemoryRequest"] == "3Gi"  # `all` over the default
    assert resources["evaluate"]["resourceCpuRequest"] == "1"  # k2e's default stays
    assert "accelerator" not in resources["evaluate"]
    tasks_ir = training["root"]["dag"]["tasks"]
    assert tasks_ir["train"]["retryPolicy"]["maxRetryCount"] == 2
    assert "retryPolicy" not in tasks_ir["export"]  # the file's `export: {retries: 0}`

    config = _kubernetes_config(training)
    assert config["train"].active_deadline_seconds == 21600
    assert config["evaluate"].active_deadline_seconds == 0
    assert dict(config["train"].node_selector.labels) == {
        "cloud.google.com/gke-accelerator": "nvidia-l4"
    }
    assert [(t.key, t.operator, t.effect) for t in config["train"].tolerations] == [
        ("nvidia.com/gpu", "Exists", "NoSchedule")
    ]
    for ir in irs.values():  # every task of every pipeline reads storage with the secret
        for task, c in _kubernetes_config(ir).items():
            assert [
                s.secret_name_parameter.runtime_value.constant.string_value for s in c.secret_as_env
            ] == ["k2e-storage"], task
            assert {(k.secret_key, k.env_var) for k in c.secret_as_env[0].key_to_env} == {
                ("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
                ("AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
            }
    job = _executor_resources(irs["job"])["run-job"]
    assert job["accelerator"] == {
        "count": "1",
        "resourceCount": "1",
        "resourceType": "nvidia.com/gpu",
        "type": "nvidia.com/gpu",
    }
    images = {
        e["container"]["image"]
        for ir in irs.values()
        for e in ir["deploymentSpec"]["executors"].values()
    }
    assert images == {"registry.example/ml/k2e:0.1.0"}


@pytest.mark.parametrize(
    "text, message",
    [
        ('trian: {cpu: "2"}', "trian: no such task; name one of all, convert, train,"),
        ("train: {cpus: 2}", "train.cpus: unknown field; remove it or fix its spelling"),
        ("train: {memory: 4GB}", "train.memory: '4GB' is not a Kubernetes quantity;"),
        ("all: {retries: -1}", "all.retries: Input should be greater than or equal to 0"),
        ("credentials: {env: {}}", "credentials.secret: required field is missing"),
        ("- train", "is not a mapping of task names to settings"),
        ("train: {cpu: [", "is not valid YAML/JSON"),
    ],
)
def test_a_bad_tasks_file_is_one_line_naming_the_field_and_nothing_is_compiled(
    tmp_path, text, message
):
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text(text)
    irs, proc = _compile_every_pipeline(tmp_path, "--tasks", str(tasks))
    assert proc.returncode == 2
    assert message in proc.stderr and str(tasks) in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert (
        not list(tmp_path.glob("*.yaml*")) == [tasks] or not (tmp_path / "training.yaml").exists()
    )


def test_no_task_is_cached(every_pipeline):
    """Every step reads storage that changes under the same parameters (data at a URL, the
    registry's latest version) or publishes: a cached result would be a stale one."""
    for name, ir in every_pipeline.items():
        tasks = ir["root"]["dag"]["tasks"]
        assert tasks and all(
            not t.get("cachingOptions", {}).get("enableCache") for t in tasks.values()
        ), name


def test_every_input_and_output_is_described_in_the_ui(every_pipeline):
    """The KFP UI shows these beside each parameter and artifact of a run's form and graph."""
    undescribed = []
    for name, ir in every_pipeline.items():
        specs = {"pipeline": ir["root"], **ir["components"]}
        for owner, spec in specs.items():
            for side in ("inputDefinitions", "outputDefinitions"):
                for kind in ("parameters", "artifacts"):
                    for field, definition in spec.get(side, {}).get(kind, {}).items():
                        if not definition.get("description", "").strip():
                            undescribed.append(f"{name}/{owner}/{field}")
    assert undescribed == []
    steps = every_pipeline["training"]["root"]["inputDefinitions"]["parameters"]["train_steps"]
    assert "0 keeps the spec's" in steps["description"]


def _executors(spec):
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    executors = json_format.MessageToDict(spec.deployment_spec)["executors"]
    return [
        json_format.ParseDict(e, pipeline_spec_pb2.PipelineDeploymentConfig.ExecutorSpec())
        for e in executors.values()
    ]


def test_the_dockerfile_installs_the_pinned_set_the_components_need():
    """One image per trainer (--build-arg TRAINER=estimator|keras), each on its environment's
    Python with its lock file and the extras the components need."""
    import re

    with open(os.path.join(REPO, "Dockerfile")) as f:
        dockerfile = f.read()
    stages = dict(re.findall(r"^FROM (python:[\d.]+)-slim-bookworm AS (\w+)$", dockerfile, re.M))
    stages = {trainer: image for image, trainer in stages.items()}
    assert stages == {"estimator": "python:3.11.7", "keras": "python:3.12.1"}
    envs = dict(re.findall(r"^ENV K2E_CONSTRAINTS=(\S+) K2E_EXTRAS=(\S+)$", dockerfile, re.M))
    assert envs == {
        "constraints.txt": "tensorflow,kfp,s3,gcs,report",
        "constraints-keras.txt": "keras,kfp,s3,gcs,report",
    }
    assert 'pip install -c "$K2E_CONSTRAINTS" ".[$K2E_EXTRAS]"' in dockerfile
    assert "ARG TRAINER=estimator" in dockerfile and "FROM ${TRAINER}" in dockerfile
    from kfp_components import components

    assert components.IMAGE == os.environ.get("K2E_IMAGE", "registry.example.com/k2e:0.1.0")


@pytest.fixture
def local_runner(tmp_path):
    from kfp import local

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    return tmp_path / "root"


@pytest.mark.slow
def test_pipeline_runs_locally_and_a_second_run_warm_starts_from_the_first(
    local_runner, iris_spec, tmp_path, tf
):
    from kfp_components.pipelines import training_pipeline

    job = {k: v for k, v in iris_spec.items() if k != "export"}
    spec = json.dumps({**job, "baseline": {"kind": "linear", "steps": 100}})
    base = str(tmp_path / "serving")
    first = training_pipeline(spec=spec, train_steps=80, export_base=base).outputs

    model = first["model"]
    assert model.metadata["framework"] == "tensorflow" and model.metadata["format"] == "SavedModel"
    assert model.metadata["version"] == 1 and model.metadata["signatures"] == ["serving_default"]
    assert model.metadata["published_to"] == first["export_path"] == os.path.join(base, "1")
    served = tf.saved_model.load(model.path).signatures["serving_default"]
    out = served(dense_input=tf.constant([[5.0, 3.4, 1.5, 0.2]]))
    assert list(out.values())[0].shape == (1, 3)

    with open(os.path.join(base, "1", "k2e-manifest.json")) as f:
        manifest = json.load(f)
    metrics = first["metrics"].metadata
    assert metrics["global_step"] == 80 and metrics["accuracy"] == manifest["metrics"]["accuracy"]
    # the train task trained the pre-made baseline into the checkpoints artifact, the
    # evaluate task measured it (the Metrics beside the model's), export recorded it
    with open(os.path.join(base, "1", "k2e-record.json")) as f:
        premade = json.load(f)["gate"]["premade_baseline"]
    assert premade["estimator"] == "LinearClassifier" and premade["global_step"] == 100
    assert metrics["baseline_accuracy"] == premade["metrics"]["accuracy"]
    assert metrics["baseline_global_step"] == 100
    matrix = first["classification"].metadata["confusionMatrix"]
    rows = [r["row"] for r in matrix["rows"]]
    assert len(rows) == 3 and sum(map(sum, rows)) == 30  # every eval row, classes 0-2
    assert sum(rows[i][i] for i in range(3)) / 30 == pytest.approx(metrics["accuracy"])
    checkpoints = first["checkpoints"]
    assert os.path.exists(os.path.join(checkpoints.path, "model.ckpt-80.index"))
    assert checkpoints.metadata["global_step"] == 80

    second = training_pipeline(
        spec=spec, train_steps=80, export_base=base, warm_start=checkpoints.uri
    ).outputs
    assert second["model"].metadata["version"] == 2
    with open(os.path.join(base, "2", "k2e-manifest.json")) as f:
        source = json.load(f)["source"]
    first_ckpt = os.path.join(checkpoints.path, "model.ckpt-80")
    assert source["warm_start"] == {
        "from": "checkpoint",
        "url": first_ckpt,
        "optimizer_state": first_ckpt,
    }
    assert second["metrics"].metadata["accuracy"] >= metrics["accuracy"] - 0.1


@pytest.mark.slow
def test_three_scheduled_runs_publish_only_blessed_versions(
    local_runner, retraining_spec, example_data, tmp_path
):
    """The gate decides inside the export component: day 1 and the better day 2 become
    versions 1 and 2; day 3's worse model stays a candidate, and a retried export task of
    that run (same run id) decides the same and publishes nothing."""
    from kfp_components import runtime
    from kfp_components.pipelines import training_pipeline

    spec = json.dumps(retraining_spec)
    base = str(tmp_path / "registry")
    runs = []
    for day in (1, 2, 3):
        fields = retraining_day(day, example_data, tmp_path)
        runs.append(
            training_pipeline(
                spec=spec,
                train_files=fields["data.train.files"],
                export_base=base,
                warm_start="latest",
            ).outputs
        )
    assert [r["blessed"] for r in runs] == [True, True, False]
    assert [r["model"].metadata["version"] for r in runs] == [1, 2, 0]
    assert runs[1]["export_path"] == os.path.join(base, "2") and runs[2]["export_path"] == ""
    third = runs[2]["model"].metadata
    assert "(baseline version 2:" in third["reason"]
    assert third["candidate"].startswith(os.path.join(base, "candidates", ""))
    record = json.loads(open(os.path.join(third["candidate"], "k2e-record.json")).read())
    assert record["warm_start"]["version"] == 2 and not record["blessed"]
    run_id = record["run_id"]
    assert run_id and not run_id.startswith("ckpt-")  # the KFP run's id, not a derived one

    # What a retried export task runs (the local runner takes no input artifacts alone).
    retry_model = SimpleNamespace(path=str(tmp_path / "retry-model"), metadata={})
    retry_report = SimpleNamespace(path=str(tmp_path / "retry-report.html"), metadata={})
    retried = runtime.export(
        spec=spec,
        spec_overrides="{}",
        eval_files="",
        export_base=base,
        metrics_json="",
        run_id=run_id,
        checkpoints=runs[2]["checkpoints"],
        model=retry_model,
        report=retry_report,
    )
    assert retried["blessed"] is False and retried["reason"] == third["reason"]
    assert retry_model.metadata["candidate"] == third["candidate"]
    assert sorted(n for n in os.listdir(base) if not n.startswith(".")) == ["1", "2", "candidates"]
    assert len(os.listdir(os.path.join(base, "candidates"))) == 1


@pytest.mark.slow
def test_job_pipeline_runs_the_whole_job_as_one_task(local_runner, iris_spec, tmp_path, tf):
    """One component, one process: the same published version, metrics and artifacts as the
    four-task pipeline; the pipeline compiles to a single task."""
    from kfp import compiler

    from kfp_components.pipelines import job_pipeline

    compiled = tmp_path / "k2e-job.yaml"
    compiler.Compiler().compile(job_pipeline, str(compiled))
    assert list(yaml.safe_load(compiled.read_text())["root"]["dag"]["tasks"]) == ["run-job"]

    spec = json.dumps({k: v for k, v in iris_spec.items() if k != "export"})
    base = str(tmp_path / "serving")
    outputs = job_pipeline(spec=spec, train_steps=60, export_base=base).outputs
    assert outputs["blessed"] is True and outputs["export_path"] == os.path.join(base, "1")
    assert outputs["model"].metadata["version"] == 1
    with open(os.path.join(base, "1", "k2e-manifest.json")) as f:
        manifest = json.load(f)
    assert outputs["metrics"].metadata["accuracy"] == manifest["metrics"]["accuracy"]
    assert outputs["checkpoints"].metadata["global_step"] == 60
    assert os.path.exists(os.path.join(outputs["checkpoints"].path, "model.ckpt-60.index"))
    served = tf.saved_model.load(outputs["model"].path).signatures["serving_default"]
    assert list(served(dense_input=tf.constant([[5.0, 3.4, 1.5, 0.2]])).values())[0].shape == (1, 3)
    # the report beside the Metrics: an HTML artifact the KFP UI shows as a page
    report = outputs["report"]
    with open(report.path) as f:
        page = f.read()
    assert page.startswith("<!DOCTYPE html>") and "Confusion matrix" in page
    assert page.count("<img ") == report.metadata["pictures"] == 5


def test_bad_input_fails_the_component_with_one_line_and_no_traceback(
    local_runner, tmp_path, capfd
):
    from kfp_components.pipelines import training_pipeline

    missing = str(tmp_path / "nowhere.yaml")
    with pytest.raises(RuntimeError, match="Inner task failed: .*convert"):
        training_pipeline(spec=missing)
    logged = capfd.readouterr()
    text = logged.out + logged.err
    assert f"k2e convert: error: spec: no spec file at {missing}; pass the path" in text
    assert "Traceback" not in text


def test_malformed_overrides_fail_the_component_with_one_line(local_runner, iris_spec, capfd):
    from kfp_components.pipelines import training_pipeline

    with pytest.raises(RuntimeError, match="Inner task failed: .*convert"):
        training_pipeline(spec=json.dumps(iris_spec), overrides="train.steps=5")
    text = "".join(capfd.readouterr())
    assert "k2e convert: error: overrides: is not JSON" in text and "Traceback" not in text


def test_any_failure_ends_a_component_with_one_line_and_the_clis_exit_code(
    iris_spec, tmp_path, capfd
):
    """As the CLI: a diverging job exits 3 (a rerun would diverge too), with one line."""
    from kfp_components import runtime
    from tests.core.test_cli import DIVERGING

    (tmp_path / "diverging.py").write_text(DIVERGING)
    with pytest.raises(SystemExit) as exited:
        runtime.step(
            "run",
            json.dumps(iris_spec),
            json.dumps({"model.factory": str(tmp_path / "diverging.py") + ":build"}),
            {},
        )
    assert exited.value.code == 3
    problems = [line for line in capfd.readouterr().err.splitlines() if " k2e " not in line[:14]]
    assert len(problems) == 1 and problems[0].startswith(
        "k2e run: failed: training diverged: the loss is NaN at step "
    ), problems
    assert not os.path.exists(iris_spec["export"]["base"])


def test_overrides_must_be_a_json_object():
    from k2e_core.errors import SpecError
    from kfp_components.runtime import overrides

    assert overrides('{"data.batch_size": 8}', train_steps=50, eval_files="") == {
        "data.batch_size": 8,
        "train.steps": 50,
    }
    with pytest.raises(SpecError, match="overrides: is not JSON"):
        overrides("train.steps=5")


@pytest.mark.slow
def test_tfjob_pipeline_compiles_without_tensorflow_and_runs_the_tfjob(
    local_runner, iris_spec, s3, tmp_path, monkeypatch
):
    """The step submits the spec's TFJob through the Kubernetes client (here to a local
    stand-in for the API server and training operator, which runs every replica's command
    with its TF_CONFIG), waits, and returns the version the chief published."""

    from tests.cluster.training_operator import ApiServer

    compiled = tmp_path / "k2e-tfjob.yaml"
    code = (
        "import sys; from kfp_components.compile import main; "
        "main([sys.argv[1], '--pipeline', 'tfjob']); print('tensorflow' in sys.modules)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(compiled)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 0 and proc.stdout.split()[-1] == "False", proc.stderr
    assert list(yaml.safe_load(compiled.read_text())["root"]["dag"]["tasks"]) == ["run-tfjob"]

    from kfp_components.pipelines import tfjob_pipeline

    spec = on_s3(
        iris_spec,
        s3,
        cluster={
            "workers": 1,
            "ps": 1,
            "evaluator": True,
            "kubernetes": {
                "image": "registry.example/k2e:0.1.0",
                "shared_volume": "k2e-shared",
                "poll_secs": 0.5,
            },
        },
    )
    root = spec["model_dir"].rsplit("/", 1)[0]
    with ApiServer(str(tmp_path / "volume")) as api_server:
        monkeypatch.setenv("KUBECONFIG", api_server.kubeconfig(tmp_path / "kubeconfig"))
        outputs = tfjob_pipeline(spec=json.dumps(spec), train_steps=300).outputs
        (name,) = api_server.created
    assert outputs["version"] == 1 and outputs["blessed"] is True
    assert outputs["export_path"] == f"{root}/export/1"
    assert 0.0 <= outputs["metrics"].metadata["accuracy"] <= 1.0
    assert name.startswith("k2e-")
