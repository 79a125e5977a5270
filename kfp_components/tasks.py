"""How each pipeline task runs on a cluster: CPU, memory, accelerators, retries, a timeout,
node placement, and storage credentials from a Kubernetes secret.

Read when the pipeline is compiled (`python -m kfp_components.compile --tasks FILE`): KFP
takes retries and timeouts only as compile-time values, so all task settings live in one
file. The file (YAML or JSON) has a section per task, named after its component, and `all`
for every task:

    all:   {memory: 2Gi}
    train: {cpu: "4", memory: 16Gi, accelerator: nvidia.com/gpu, accelerators: 1,
            retries: 2, timeout_secs: 21600}
    credentials: {secret: k2e-storage}
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from k2e_core.errors import SpecError

#: The components the pipelines run, as the tasks file names them.
TASKS = ("convert", "train", "evaluate", "export", "run_job", "run_tfjob")

#: The environment variables s3fs and boto read, from secret keys of the same name.
AWS_KEYS = {
    "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Toleration(_Section):
    key: str
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


#: The quantities KFP accepts (it checks them with these patterns when compiling).
Cpu = Annotated[str, StringConstraints(pattern=r"^([0-9]*[.])?[0-9]+m?$")]
Memory = Annotated[str, StringConstraints(pattern=r"^[0-9]+(E|Ei|P|Pi|T|Ti|G|Gi|M|Mi|K|Ki)?$")]


class TaskSettings(_Section):
    """One task's pod; unset fields take the `all` section's, then k2e's defaults."""

    cpu: Cpu | None = Field(None, description='CPU request, e.g. "2" or "500m"')
    cpu_limit: Cpu | None = Field(None, description="CPU limit (default: none, no throttling)")
    memory: Memory | None = Field(None, description='Memory request, e.g. "4Gi"')
    memory_limit: Memory | None = Field(None, description="Memory limit (default: the request)")
    accelerator: str | None = Field(None, description='Accelerator type, e.g. "nvidia.com/gpu"')
    accelerators: int | None = Field(None, ge=1, description="How many accelerators")
    retries: int | None = Field(None, ge=0, description="Retries of a failed pod")
    retry_backoff_secs: int | None = Field(None, ge=1, description="Wait before the first retry")
    timeout_secs: int | None = Field(None, ge=1, description="The pod is stopped after this long")
    node_selector: dict[str, str] | None = Field(None, description="Node labels the pod needs")
    tolerations: list[Toleration] | None = Field(None, description="Taints the pod tolerates")

    def over(self, base: TaskSettings) -> TaskSettings:
        """These settings, with `base`'s where these leave a field unset."""
        merged = {**base.model_dump(exclude_unset=True), **self.model_dump(exclude_unset=True)}
        return TaskSettings.model_validate(merged)


class Credentials(_Section):
    secret: str = Field(description="The Kubernetes secret every task reads")
    env: dict[str, str] = Field(
        default_factory=lambda: dict(AWS_KEYS),
        description="Secret key -> environment variable (default: the AWS key pair)",
    )
    mount_path: str | None = Field(
        None, description="Also mount the secret's keys as files here (a GCS key file)"
    )


#: k2e's defaults: what the iris example needs with room to spare; the training tasks more.
DEFAULTS = {
    "all": TaskSettings(cpu="1", memory="2Gi", retries=1, retry_backoff_secs=30),
    "train": TaskSettings(cpu="2", memory="4Gi"),
    "run_job": TaskSettings(cpu="2", memory="4Gi"),
    "run_tfjob": TaskSettings(cpu="500m", memory="1Gi"),
}


class PipelineTasks(_Section):
    all: TaskSettings = Field(default_factory=TaskSettings)
    convert: TaskSettings = Field(default_factory=TaskSettings)
    train: TaskSettings = Field(default_factory=TaskSettings)
    evaluate: TaskSettings = Field(default_factory=TaskSettings)
    export: TaskSettings = Field(default_factory=TaskSettings)
    run_job: TaskSettings = Field(default_factory=TaskSettings)
    run_tfjob: TaskSettings = Field(default_factory=TaskSettings)
    credentials: Credentials | None = None

    def settings(self, name: str) -> TaskSettings:
        """What the task `name` runs with: its section, over `all`, over k2e's defaults."""
        base = DEFAULTS.get(name, TaskSettings()).over(DEFAULTS["all"])
        return getattr(self, name).over(self.all.over(base))

    def apply(self, task, name: str):
        """Configures the KFP task `task` of component `name` for the cluster; never cached,
        since every k2e task reads storage that changes between runs or publishes."""
        from kfp import kubernetes

        settings = self.settings(name)
        task.set_caching_options(False)
        if settings.cpu:
            task.set_cpu_request(settings.cpu)
        if settings.cpu_limit:
            task.set_cpu_limit(settings.cpu_limit)
        if settings.memory:
            task.set_memory_request(settings.memory)
        if settings.memory_limit or settings.memory:
            task.set_memory_limit(settings.memory_limit or settings.memory)
        if settings.accelerator:
            task.set_accelerator_type(settings.accelerator)
            task.set_accelerator_limit(settings.accelerators or 1)
        if settings.retries:
            backoff = settings.retry_backoff_secs
            task.set_retry(settings.retries, backoff_duration=f"{backoff}s" if backoff else None)
        if settings.timeout_secs:
            kubernetes.set_timeout(task, settings.timeout_secs)
        for label, value in (settings.node_selector or {}).items():
            kubernetes.add_node_selector(task, label, value)
        for toleration in settings.tolerations or []:
            kubernetes.add_toleration(task, **toleration.model_dump(exclude_none=True))
        if self.credentials:
            kubernetes.use_secret_as_env(task, self.credentials.secret, self.credentials.env)
            if self.credentials.mount_path:
                kubernetes.use_secret_as_volume(
                    task, self.credentials.secret, mount_path=self.credentials.mount_path
                )
        return task


def load_tasks(path: str | None) -> PipelineTasks:
    """The task settings in the YAML/JSON file at `path` (None: k2e's defaults)."""
    if not path:
        return PipelineTasks()
    import yaml

    readme = "the README's 'Kubeflow Pipelines on a cluster'"
    fix = f"see {readme}"
    try:
        with open(path) as f:
            raw = yaml.safe_load(f)
    except OSError as err:
        raise SpecError("--tasks", f"cannot read {path} ({err.strerror or err})", fix) from None
    except yaml.YAMLError as err:
        raise SpecError(
            "--tasks", f"{path} is not valid YAML/JSON ({str(err).splitlines()[0]})", fix
        ) from None
    if not isinstance(raw, dict):
        raise SpecError("--tasks", f"{path} is not a mapping of task names to settings", fix)
    try:
        return PipelineTasks.model_validate(raw)
    except ValidationError as err:
        from k2e_core.spec import spec_error

        first, error = err.errors()[0], spec_error(err)
        field = f"{path}: {error.field}"
        if first["type"] == "extra_forbidden" and len(first["loc"]) == 1:
            sections = ", ".join(("all", *TASKS))
            raise SpecError(
                field, "no such task", f"name one of {sections} or credentials"
            ) from None
        if first["type"] == "string_pattern_mismatch":
            raise SpecError(
                field,
                f"{first['input']!r} is not a Kubernetes quantity",
                'write CPU as "2" or "500m", memory as "4Gi" or "512Mi"',
            ) from None
        raise SpecError(field, error.problem, error.fix.replace("`k2e schema`", readme)) from None
