"""The TFJob k2e writes from a job spec: its structure, the errors that keep a broken one from
being submitted, and its replicas run here with the TF_CONFIG the training operator would
set, submitted and waited for through the Kubernetes client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import yaml

from tests.cluster.training_operator import ApiServer
from tests.conftest import on_s3

K2E = os.path.join(os.path.dirname(sys.executable), "k2e")
IMAGE = "registry.example/k2e:0.1.0"


@pytest.fixture
def s3_spec(iris_spec, s3):
    """The iris job on the S3 server, credentials from the environment (as a Secret gives)."""
    return on_s3(
        iris_spec,
        s3,
        cluster={
            "workers": 1,
            "ps": 1,
            "kubernetes": {
                "image": IMAGE,
                "shared_volume": "k2e-shared",
                "env_from_secret": "k2e-s3",
                "poll_secs": 0.5,
            },
        },
    )


def _manifest(spec, name=None):
    from k2e_core.distributed import tfjob
    from k2e_core.spec import load_spec

    return tfjob.manifest(load_spec(spec), name)


def test_the_manifest_is_a_tfjob_the_training_operator_accepts(s3_spec, tmp_path):
    from k2e_core.distributed import tfjob

    s3_spec["cluster"].update(workers=2, evaluator=True)
    s3_spec["cluster"]["kubernetes"]["resources"] = {"worker": {"requests": {"cpu": "4"}}}
    body = _manifest(s3_spec, "iris-nightly")
    assert (body["apiVersion"], body["kind"]) == ("kubeflow.org/v1", "TFJob")
    assert body["metadata"]["name"] == "iris-nightly"
    assert body["spec"]["runPolicy"]["cleanPodPolicy"] == "Running"  # ps pods end with the job
    replicas = body["spec"]["tfReplicaSpecs"]
    assert {k: r["replicas"] for k, r in replicas.items()} == {
        "PS": 1,
        "Chief": 1,
        "Worker": 2,
        "Evaluator": 1,
    }
    for replica in replicas.values():
        assert replica["restartPolicy"] == "ExitCode"
        pod = replica["template"]["spec"]
        (container,) = pod["containers"]
        assert container["name"] == "tensorflow" and container["image"] == IMAGE
        assert container["ports"] == [{"name": "tfjob-port", "containerPort": 2222}]
        assert container["command"] == ["k2e"] and container["args"][0] == "run"
        assert container["envFrom"] == [{"secretRef": {"name": "k2e-s3"}}]
        assert container["volumeMounts"][0]["mountPath"] == "/k2e/shared"
        assert pod["volumes"][0]["persistentVolumeClaim"] == {"claimName": "k2e-shared"}
        spec = json.loads(container["args"][1])  # the spec travels in the manifest
        assert spec["run_id"] == "iris-nightly" and spec["model_dir"] == s3_spec["model_dir"]
    assert replicas["Worker"]["template"]["spec"]["containers"][0]["resources"] == {
        "requests": {"cpu": "4"}
    }
    assert replicas["Chief"]["template"]["spec"]["containers"][0]["resources"] == {}
    # The TF_CONFIG the operator sets: service names, the evaluator outside the cluster.
    config = json.loads(tfjob.tf_config(body, "worker", 1))
    assert config["task"] == {"type": "worker", "index": 1}
    assert config["cluster"] == {
        "ps": ["iris-nightly-ps-0.default.svc:2222"],
        "chief": ["iris-nightly-chief-0.default.svc:2222"],
        "worker": [
            "iris-nightly-worker-0.default.svc:2222",
            "iris-nightly-worker-1.default.svc:2222",
        ],
    }
    # `k2e tfjob` prints the same manifest as plain YAML (no anchors kubectl users trip on).
    spec_file = tmp_path / "job.json"
    spec_file.write_text(json.dumps(s3_spec))
    proc = subprocess.run(
        [K2E, "tfjob", str(spec_file), "--name", "iris-nightly"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "&id" not in proc.stdout
    assert yaml.safe_load(proc.stdout) == _manifest(str(spec_file), "iris-nightly")


@pytest.mark.parametrize(
    "layout",
    [
        {"workers": 1, "ps": 1},
        {"workers": 0, "ps": 0, "evaluator": True},
        {"workers": 3, "ps": 2, "evaluator": True},
    ],
    ids=["worker+ps", "chief+evaluator", "workers+ps+evaluator"],
)
def test_every_tfjob_k2e_writes_reads_as_the_training_operators_own_api_model(s3_spec, layout):
    """Read with the training operator's Python API models (kubeflow-training 1.9): nothing is
    dropped as unknown, the names are the operator's, every replica type is one it runs."""
    from kubeflow.training import models
    from kubeflow.training.api_client import ApiClient
    from kubeflow.training.constants import constants

    from k2e_core.distributed import tfjob

    s3_spec["cluster"].update(layout)
    s3_spec["cluster"]["kubernetes"].update(
        service_account="k2e-trainer",
        resources={"worker": {"requests": {"cpu": "4"}, "limits": {"nvidia.com/gpu": 1}}},
    )
    body = _manifest(s3_spec, "iris-nightly")
    client = ApiClient()
    job = client.deserialize(SimpleNamespace(data=json.dumps(body)), constants.TFJOB_MODEL)
    assert isinstance(job, models.KubeflowOrgV1TFJob)
    assert client.sanitize_for_serialization(job) == body  # every field known, none dropped
    assert (job.api_version, job.kind) == (constants.API_VERSION, constants.TFJOB_KIND)
    assert (tfjob.GROUP, tfjob.PLURAL) == (constants.GROUP, constants.TFJOB_PLURAL)
    operator_types = {*constants.TFJOB_REPLICA_TYPES, "evaluator"}  # the Go operator's set
    assert {t.lower() for t in job.spec.tf_replica_specs} <= operator_types
    for replica in job.spec.tf_replica_specs.values():
        assert replica.restart_policy in ("Always", "OnFailure", "Never", "ExitCode")
        (container,) = replica.template.spec.containers
        assert container.name == constants.TFJOB_CONTAINER  # where the operator sets TF_CONFIG
    # Parameter servers never exit by themselves: the job ends with the chief, and the
    # operator deletes the pods still running (the ps) instead of leaving the TFJob hanging.
    assert job.spec.run_policy.clean_pod_policy == "Running"
    assert "Chief" in job.spec.tf_replica_specs and not job.spec.success_policy
    # The evaluator gets a TF_CONFIG task but is no member of the cluster the others dial.
    if layout.get("evaluator"):
        config = json.loads(tfjob.tf_config(body, "evaluator", 0))
        assert config["task"] == {"type": "evaluator", "index": 0}
        assert "evaluator" not in config["cluster"]


@pytest.mark.parametrize(
    "change, field",
    [
        ({"cluster.kubernetes.image": None}, "cluster.kubernetes.image"),
        ({"model_dir": "/data/model"}, "model_dir"),
        ({"export.base": "memory://models"}, "export.base"),
        ({"cluster.kubernetes.shared_volume": None}, "cluster.kubernetes.shared_volume"),
        ({"storage.options.s3.secret": "s3cr3t"}, "storage.options.s3.secret"),
    ],
)
def test_a_manifest_that_could_not_work_is_refused_naming_the_field(s3_spec, change, field):
    from k2e_core.errors import SpecError
    from k2e_core.spec import apply_overrides

    with pytest.raises(SpecError) as err:
        _manifest(apply_overrides(s3_spec, change))
    assert err.value.field == field and err.value.fix


@pytest.mark.slow
def test_a_submitted_tfjob_trains_from_its_replicas_commands_and_returns_the_version(
    s3_spec, tmp_path
):
    """Every replica runs the manifest's command with the TF_CONFIG the operator computes;
    the submitter waits through the Kubernetes client and reads what the chief published."""
    from k2e_core import registry, storage
    from k2e_core.distributed import tfjob
    from k2e_core.spec import load_spec

    s3_spec["train"]["steps"] = 800
    spec = load_spec(s3_spec)
    with ApiServer(str(tmp_path / "volume")) as api_server:
        kube_config = api_server.kubeconfig(tmp_path / "kubeconfig")
        result = tfjob.run(spec, "iris-tfjob", kube_config=kube_config)
        assert result["submitted"] and result["tfjob"] == "default/iris-tfjob"
        assert result["version"] == 1 and result["blessed"] and result["run_id"] == "iris-tfjob"
        assert result["global_step"] >= 800
        # Submitted again (a retried task): it re-attaches to the same TFJob, nothing new.
        again = tfjob.run(spec, "iris-tfjob", kube_config=kube_config)
        assert not again["submitted"] and again["version"] == 1
        assert api_server.created == ["iris-tfjob"]
    with storage.configured(spec.storage.options):
        entries = registry.entries(spec.export.base)
        checkpoints = storage.find(spec.model_dir)
    assert [(e["version"], e["run_id"]) for e in entries] == [(1, "iris-tfjob")]
    assert any(name.startswith("model.ckpt-") for name in checkpoints)  # synced by the chief


@pytest.mark.slow
def test_a_failing_replica_fails_the_tfjob_with_its_error(s3_spec, tmp_path):
    from k2e_core.distributed import tfjob
    from k2e_core.errors import K2eError
    from k2e_core.spec import load_spec

    s3_spec["data"]["train"]["files"] = str(tmp_path / "missing-*.csv")
    with ApiServer(str(tmp_path / "volume")) as api_server:
        with pytest.raises(K2eError) as err:
            tfjob.run(
                load_spec(s3_spec),
                "iris-broken",
                kube_config=api_server.kubeconfig(tmp_path / "kubeconfig"),
            )
    message = str(err.value)
    assert message.startswith("TFJob default/iris-broken failed: TFJobFailed cluster: ")
    assert "data.train.files" in message and "exited with code 2" in message
