"""A job spec's cluster as a Kubeflow TFJob (training-operator, kubeflow.org/v1), and a
submitter that creates it and waits for it with the Kubernetes client.

The training operator starts one pod per replica and gives each the TF_CONFIG of its task
(`<job>-<role>-<index>.<namespace>.svc:2222`, the evaluator outside the cluster); the
replica's command is `k2e run SPEC`, which reads its role from that TF_CONFIG. Pods return
nothing: the chief publishes under the TFJob's name as run id, and the submitter reads the
result from the registry at export.base.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time

from k2e_core import storage
from k2e_core.distributed import cluster
from k2e_core.errors import K2eError, SpecError

log = logging.getLogger("k2e.tfjob")

GROUP, VERSION, PLURAL, KIND = "kubeflow.org", "v1", "tfjobs", "TFJob"
CONTAINER = "tensorflow"  # the operator sets TF_CONFIG in the container of this name
PORT_NAME, PORT = "tfjob-port", 2222
SHARED_MOUNT = "/k2e/shared"
REPLICA_TYPES = {"chief": "Chief", "ps": "PS", "worker": "Worker", "evaluator": "Evaluator"}
_SECRET_KEYS = re.compile(r"secret|password|token|private|credential|^key$|access_key", re.I)


def default_name(spec) -> str:
    digest = hashlib.sha256(spec.model_dump_json(exclude_unset=True).encode()).hexdigest()[:10]
    return f"k2e-{digest}"


def name_for(*parts: str) -> str:
    """A TFJob name for one run (an Airflow DAG, task and run id; a KFP run id): readable,
    unique per run, short enough for the pod and service names the operator derives."""
    text = "/".join(parts)
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:30].strip("-")
    return f"k2e-{slug}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def manifest(spec, name: str | None = None) -> dict:
    """The TFJob for `spec`'s cluster. `name` (else cluster.kubernetes.name, else one derived
    from the spec) is also the run id unless the spec sets one: a resubmitted TFJob of the
    same name publishes at most one version."""
    k8s = spec.cluster.kubernetes
    if not k8s.image:
        raise SpecError(
            "cluster.kubernetes.image",
            "is not set",
            "name an image with k2e installed (build it from the Dockerfile)",
        )
    name = name or k8s.name or default_name(spec)
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", name):
        raise SpecError(
            "cluster.kubernetes.name",
            f"{name!r} is not a Kubernetes name",
            "use lower-case letters, digits and '-'",
        )
    _check_locations(spec)
    run_spec = spec.model_copy(update={"run_id": spec.run_id or name})
    if k8s.spec_url:
        args = ["run", k8s.spec_url, "--set", f"run_id={run_spec.run_id}"]
    else:
        _check_no_secrets(spec)
        args = ["run", run_spec.model_dump_json(exclude_unset=True)]
    env = [
        {"name": cluster.SHARED_DIR_ENV, "value": f"{SHARED_MOUNT}/{name}"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    replicas = {}
    for role, count in spec.cluster.roles().items():
        container = {
            "name": CONTAINER,
            "image": k8s.image,
            "command": ["k2e"],
            "args": list(args),
            "env": [dict(e) for e in env],
            "ports": [{"name": PORT_NAME, "containerPort": PORT}],
            "resources": _quantities(k8s.resources.get(role, {})),
        }
        pod = {"containers": [container]}
        if k8s.env_from_secret:
            container["envFrom"] = [{"secretRef": {"name": k8s.env_from_secret}}]
        if k8s.shared_volume:
            container["volumeMounts"] = [{"name": "k2e-shared", "mountPath": SHARED_MOUNT}]
            pod["volumes"] = [
                {"name": "k2e-shared", "persistentVolumeClaim": {"claimName": k8s.shared_volume}}
            ]
        if k8s.service_account:
            pod["serviceAccountName"] = k8s.service_account
        replicas[REPLICA_TYPES[role]] = {
            "replicas": count,
            # 1-127 (k2e's 1 failure, 2 bad input) fail the job; 128+ (killed, evicted) restart
            "restartPolicy": "ExitCode",
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "k2e", "k2e/role": role}},
                "spec": pod,
            },
        }
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": k8s.namespace,
            "labels": {"app.kubernetes.io/name": "k2e", "app.kubernetes.io/managed-by": "k2e"},
        },
        "spec": {
            "runPolicy": {"cleanPodPolicy": "Running", "backoffLimit": k8s.backoff_limit},
            "tfReplicaSpecs": replicas,
        },
    }


def _quantities(resources: dict) -> dict:
    """Requests and limits as Kubernetes writes quantities: strings (`gpu: 1` -> "1")."""
    return {
        kind: {name: str(q) for name, q in values.items()} for kind, values in resources.items()
    }


def _check_locations(spec) -> None:
    """Pods share no disk with each other or with this machine."""
    for field, url in (
        ("model_dir", spec.model_dir),
        ("export.base", spec.export.base if spec.export else None),
    ):
        if url is None:
            continue
        if "://" not in url or url.startswith(("file://", "memory://")):
            raise SpecError(
                field,
                f"{url} is not shared storage: each pod has its own disk",
                "use an s3:// or gs:// URL",
            )
    if spec.export is None:
        raise SpecError("export", "no export section", "add export.base (where versions go)")
    if spec.cluster.ps and not spec.cluster.kubernetes.shared_volume:
        raise SpecError(
            "cluster.kubernetes.shared_volume",
            "parameter servers write their checkpoint shards to the model_dir's local "
            "copy, so every replica must mount the same volume",
            "name a ReadWriteMany PersistentVolumeClaim",
        )


def _check_no_secrets(spec) -> None:
    for protocol, options in spec.storage.options.items():
        for key in options:
            if _SECRET_KEYS.search(key):
                raise SpecError(
                    f"storage.options.{protocol}.{key}",
                    "would be written into the TFJob in plain text",
                    "give pods credentials through cluster.kubernetes.env_from_secret "
                    "(or workload identity), or set cluster.kubernetes.spec_url",
                )


def tf_config(manifest: dict, role: str, index: int, hosts: dict | None = None) -> str:
    """The TF_CONFIG the training operator sets for one replica: every non-evaluator replica
    at `<job>-<role>-<index>.<namespace>.svc:<port>`, or at `hosts[role][index]`."""
    name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
    addresses = {}
    for rtype, replica in manifest["spec"]["tfReplicaSpecs"].items():
        rt = rtype.lower()
        if rt == "evaluator":
            continue
        port = replica["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
        addresses[rt] = [
            hosts[rt][i] if hosts else f"{name}-{rt}-{i}.{namespace}.svc:{port}"
            for i in range(replica["replicas"])
        ]
    return cluster.tf_config(addresses, role, index)


# --------------------------------------------------------------------------- submit and wait


def _api(kube_config: str | None = None, context: str | None = None):
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config(config_file=kube_config, context=context)
    return client.CustomObjectsApi()


def submit(body: dict, api) -> bool:
    """Creates the TFJob; False when one of that name exists (a retried task re-attaches)."""
    from kubernetes.client.exceptions import ApiException

    meta = body["metadata"]
    try:
        api.create_namespaced_custom_object(GROUP, VERSION, meta["namespace"], PLURAL, body)
    except ApiException as err:
        if err.status == 409:
            log.info("TFJob %s/%s exists; waiting for it", meta["namespace"], meta["name"])
            return False
        raise K2eError(
            f"TFJob {meta['name']}: the API server refused it ({err.status} "
            f"{err.reason}): {_api_message(err)}"
        ) from None
    log.info("submitted TFJob %s/%s", meta["namespace"], meta["name"])
    return True


def _api_message(err) -> str:
    try:
        return json.loads(err.body).get("message", "")
    except (TypeError, ValueError):
        return str(err.body or "")[:200]


def state(job: dict) -> tuple[str | None, dict]:
    """The TFJob's state (its last true condition: Created, Running, Succeeded, Failed...;
    None while pending) and that condition."""
    status = job.get("status") or {}
    conditions = [c for c in status.get("conditions") or [] if c.get("status") == "True"]
    last = conditions[-1] if conditions else {}
    return last.get("type"), last


def state_line(name: str, state: str | None, condition: dict) -> str:
    message = condition.get("message")
    return f"TFJob {name}: {state or 'pending'}" + (f" ({message})" if message else "")


def failed(namespace: str, name: str, condition: dict) -> K2eError:
    return K2eError(
        f"TFJob {namespace}/{name} failed: {condition.get('reason', '')} "
        f"{condition.get('message', '')}".rstrip()
        + "; a resubmission of the same name resumes from the last checkpoint"
    )


def timed_out(namespace: str, name: str, timeout_secs: float, state: str | None) -> K2eError:
    return K2eError(
        f"TFJob {namespace}/{name} did not finish within {timeout_secs:g}s "
        f"(last state: {state or 'pending'}); it keeps running"
    )


def wait(api, namespace: str, name: str, poll_secs: float, timeout_secs: float | None) -> dict:
    """Polls the TFJob until its last condition is Succeeded (returns its status) or Failed."""
    began, seen = time.monotonic(), None
    while True:
        job = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        current, condition = state(job)
        if current != seen:
            log.info("%s", state_line(name, current, condition))
            seen = current
        if current == "Succeeded":
            return job.get("status") or {}
        if current == "Failed":
            raise failed(namespace, name, condition)
        if timeout_secs and time.monotonic() - began > timeout_secs:
            raise timed_out(namespace, name, timeout_secs, current)
        time.sleep(poll_secs)


def published(spec, run_id: str) -> dict:
    """What the chief published for `run_id`, read from the registry at export.base."""
    from k2e_core import registry

    base = spec.path(spec.export.base)
    with storage.configured(
        spec.storage.options, spec.storage.retries, retry_seconds=spec.storage.retry_seconds
    ):
        found = [r for r in registry.entries(base) if r.get("run_id") == run_id]
    if not found:
        raise K2eError(
            f"the TFJob succeeded but nothing under {storage.redact(base)} was "
            f"published by run {run_id}"
        )
    record = found[-1]
    blessed = record.get("version") is not None
    return {
        "version": record.get("version"),
        "export_path": record["url"] if blessed else None,
        "candidate_path": None if blessed else record["url"],
        "blessed": bool(record.get("blessed")) and blessed,
        "reason": record.get("reason"),
        "metrics": record.get("metrics", {}),
        "global_step": record.get("source", {}).get("global_step"),
        "run_id": run_id,
        "export_base": storage.redact(base),
    }


def start(spec, name: str | None = None, *, api=None, kube_config=None, context=None) -> dict:
    """Submits the spec's TFJob (or finds the one of that name): {namespace, name, submitted}."""
    body = manifest(spec, name)
    meta = body["metadata"]
    created = submit(body, api or _api(kube_config, context))
    return {"namespace": meta["namespace"], "name": meta["name"], "submitted": created}


def finished(spec, job: dict) -> dict:
    """What the succeeded TFJob `job` (as `start` returned it) published."""
    run_id = spec.run_id or job["name"]
    return {
        **published(spec, run_id),
        "tfjob": f"{job['namespace']}/{job['name']}",
        "submitted": job["submitted"],
    }


def run(
    spec,
    name: str | None = None,
    *,
    api=None,
    kube_config: str | None = None,
    context: str | None = None,
) -> dict:
    """Submits the spec's TFJob, waits for it, and returns the chief's published version."""
    api = api or _api(kube_config, context)
    job = start(spec, name, api=api)
    k8s = spec.cluster.kubernetes
    wait(api, job["namespace"], job["name"], k8s.poll_secs, k8s.timeout_secs)
    return finished(spec, job)
