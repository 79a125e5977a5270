"""Distributed training: the role TF_CONFIG gives this process, and what each role does.

Between-graph replication: the chief and the workers each build the graph and train, the
variables live on the parameter servers (ps), the chief initialises and checkpoints them,
and in k2e it alone evaluates for the gate, exports and publishes. An evaluator task
evaluates every new checkpoint, which is what early stopping reads.

Parameter servers write their own checkpoint shards, so every task of a cluster uses the
same local directory for a remote model_dir: `K2E_SHARED_DIR` (the launcher's temporary
directory on one machine, a shared volume on Kubernetes). Only the chief syncs it with
the remote model_dir.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import tempfile

from k2e_core.errors import SpecError

log = logging.getLogger("k2e.cluster")

SHARED_DIR_ENV = "K2E_SHARED_DIR"
DONE_MARKER = "k2e-training-done.json"  # the chief's "training ended at step N of M"


@dataclasses.dataclass(frozen=True)
class Task:
    type: str
    index: int
    cluster: dict

    @property
    def is_chief(self) -> bool:
        return self.type == "chief"

    @property
    def name(self) -> str:
        return f"{self.type}{self.index}" if self.type in ("worker", "ps") else self.type

    @property
    def data_share(self) -> tuple[int, int] | None:
        """(index, count) of this task among those that train (chief 0, worker i at i + 1):
        which share of the training data it reads. None for ps and evaluator."""
        if self.type not in ("chief", "worker"):
            return None
        count = len(self.cluster.get("chief", [])) + len(self.cluster.get("worker", []))
        return (0 if self.is_chief else self.index + 1), count


def tf_config(addresses: dict[str, list[str]], role: str, index: int) -> str:
    """The TF_CONFIG of one task, as the training operator writes it. `addresses`: the
    training cluster (chief, worker, ps); the evaluator is never part of it."""
    return json.dumps(
        {"cluster": addresses, "task": {"type": role, "index": index}, "environment": "cloud"}
    )


def current_task(spec) -> Task | None:
    """This process's task from TF_CONFIG; None outside a cluster, and for a lone chief
    that has no evaluator to work with (it trains as a single process)."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        config = json.loads(raw)
        task = config.get("task") or {}
        cluster = config.get("cluster") or {}
    except (ValueError, AttributeError):
        raise SpecError(
            "TF_CONFIG",
            "is not a JSON object with cluster and task",
            "unset it, or set it as the training operator does",
        ) from None
    kind = task.get("type")
    if not kind:
        return None
    if kind not in ("chief", "worker", "ps", "evaluator"):
        raise SpecError(
            "TF_CONFIG",
            f"task type {kind!r} is not one k2e runs",
            "use chief, worker, ps or evaluator (a TFJob's Chief, not Master)",
        )
    if (
        kind != "evaluator"
        and sum(len(v) for v in cluster.values()) <= 1
        and not spec.cluster.evaluator
    ):
        return None
    if cluster.get("worker") and not cluster.get("ps"):
        raise SpecError(
            "TF_CONFIG",
            f"{len(cluster['worker'])} worker(s) but no ps",
            "between-graph replication keeps variables on parameter servers; add a ps",
        )
    if kind != "evaluator" and "chief" not in cluster:
        raise SpecError("TF_CONFIG", "the cluster has no chief", "add a chief task")
    return Task(kind, int(task.get("index", 0)), cluster)


def check(task: Task, spec) -> None:
    """Layouts that would hang or lose work rather than fail: refused up front with the fix."""
    for field, url in (
        ("model_dir", spec.model_dir),
        ("export.base", spec.export.base if spec.export else None),
    ):
        if url and url.startswith("memory://"):
            raise SpecError(
                field,
                "memory:// is private to each process of a cluster",
                "use a local path or an s3:// or gs:// URL",
            )
    # TF_CONFIG never lists the evaluator (it is not part of the training cluster).
    if (
        spec.train.early_stopping
        and task.type in ("chief", "worker")
        and not spec.cluster.evaluator
    ):
        raise SpecError(
            "train.early_stopping",
            "in a cluster, early stopping reads the evaluator's results and this "
            "cluster has no evaluator",
            "add one (--cluster ...,evaluator=1 or cluster.evaluator: true)",
        )


def leads(task: Task | None) -> bool:
    """Whether this process writes model_dir's records and syncs it: a single process (no
    TF_CONFIG) or the chief."""
    return task is None or task.is_chief


def shared_dir(model_dir_url: str) -> str:
    """The local copy of a remote model_dir that every task of the cluster uses."""
    root = os.environ.get(SHARED_DIR_ENV) or os.path.join(tempfile.gettempdir(), "k2e-shared")
    digest = hashlib.sha256(model_dir_url.encode()).hexdigest()[:16]
    return os.path.join(root, digest, "model_dir")


def prepare_process(task: Task) -> None:
    """A ps has nothing to save: SIGTERM ends it at once. Workers ask whether the chief has
    initialised the variables every second, not every 30 s (TF's default), which would
    idle them through short jobs."""
    if task.type == "ps":
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if task.type != "worker":
        return
    from k2e_core.estimator import compat

    compat.check_workers_every_second()


@contextlib.contextmanager
def single_process():
    """TF_CONFIG hidden, for a RunConfig (which reads it) of work the chief does alone."""
    raw = os.environ.pop("TF_CONFIG", None)
    try:
        yield
    finally:
        if raw is not None:
            os.environ["TF_CONFIG"] = raw


def run_config_settings(spec) -> dict:
    """RunConfig arguments for a cluster (RunConfig itself reads TF_CONFIG)."""
    settings = {"experimental_max_worker_delay_secs": spec.cluster.max_worker_delay_secs}
    if spec.cluster.strategy == "parameter_server":
        from k2e_core.estimator.compat import tf

        settings["train_distribute"] = (
            tf.compat.v1.distribute.experimental.ParameterServerStrategy()
        )
    return settings


# --------------------------------------------------------------------------- chief <-> evaluator


def mark_training(model_dir: str, train_steps: int, global_step: int | None) -> None:
    """The chief's record that training ended (None: clears it when training starts)."""
    path = os.path.join(model_dir, DONE_MARKER)
    if global_step is None:
        if os.path.exists(path):
            os.remove(path)
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"train_steps": train_steps, "global_step": global_step}, f)
    os.replace(tmp, path)


def training_ended_at(model_dir: str, train_steps: int) -> int | None:
    """The step the chief's training of `train_steps` ended at, or None while it runs."""
    try:
        with open(os.path.join(model_dir, DONE_MARKER)) as f:
            done = json.load(f)
    except (OSError, ValueError):
        return None
    return done["global_step"] if done.get("train_steps") == train_steps else None


def evaluator_listener(model_dir: str, train_steps: int):
    """Keeps the evaluator going until it has evaluated the checkpoint training ended at.
    Upstream stops only at train max_steps, so after an early stop it would wait forever."""
    from k2e_core.estimator import compat

    class FollowTraining(compat.ContinuousEvalListener):
        def __init__(self):
            self.evaluations = 0
            self.last = None  # (global step, metrics) of the latest evaluation

        def before_eval(self):
            ended = training_ended_at(model_dir, train_steps)
            if ended is not None and self.last and self.last[0] >= ended:
                log.info("evaluator: training ended at step %d, evaluated; stopping", ended)
                return False
            return True

        def after_eval(self, eval_result):
            metrics = getattr(eval_result, "metrics", None)
            if metrics:
                self.evaluations += 1
                self.last = (int(metrics.get("global_step", 0)), metrics)
                log.info(
                    "evaluator: step %d: %s",
                    self.last[0],
                    "  ".join(
                        f"{k} {float(v):.4f}" for k, v in metrics.items() if k != "global_step"
                    ),
                )
            return True

    return FollowTraining()
