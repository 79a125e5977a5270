"""A local cluster: one process per task on this machine, each with the TF_CONFIG the
training operator would give it, ports on 127.0.0.1. For tests, and for using every core
of a big machine (one Python process trains on one graph at a time).

Logs stream with the task's name in front; if a task fails, the others are stopped (the
chief and workers with SIGTERM, so the chief saves a checkpoint a rerun resumes from); the
result is the chief's.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from k2e_core.distributed import cluster
from k2e_core.errors import K2eError, SpecError

log = logging.getLogger("k2e.launcher")

_ROLE_NAMES = {
    "worker": "workers",
    "workers": "workers",
    "ps": "ps",
    "evaluator": "evaluator",
    "evaluators": "evaluator",
}
STOP_GRACE_SECS = 30  # how long a SIGTERM'd task may take to save its checkpoint
FINISH_GRACE_SECS = 120  # how long workers and the evaluator may take after the chief ends


def parse_layout(text: str) -> dict:
    """`workers=2,ps=1,evaluator=1` -> spec overrides for the `cluster` section."""
    overrides = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        field = _ROLE_NAMES.get(key.strip())
        if not sep or field is None or not value.strip().isdigit():
            raise SpecError(
                "--cluster",
                f"{part!r} is not ROLE=COUNT",
                "write e.g. --cluster workers=2,ps=1,evaluator=1",
            )
        count = int(value)
        if field == "evaluator" and count > 1:
            raise SpecError(
                "--cluster", f"evaluator={count}", "a cluster has at most one evaluator"
            )
        overrides[f"cluster.{field}"] = bool(count) if field == "evaluator" else count
    return overrides


def tf_configs(layout: dict[str, int], addresses: dict[str, list[str]]) -> dict[str, str]:
    """TF_CONFIG per task name, for every task of `layout`."""
    training = {role: addresses[role] for role in ("chief", "worker", "ps") if layout.get(role)}
    return {
        cluster.Task(role, index, training).name: cluster.tf_config(training, role, index)
        for role, count in layout.items()
        for index in range(count)
    }


def free_ports(count: int) -> list[int]:
    """Ports the OS hands out on 127.0.0.1, held open until all are chosen (no repeats)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


class _Task:
    def __init__(self, name, argv, env):
        self.name = name
        self.result = None
        self.last_error = None
        self.process = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
        )
        self._threads = [
            threading.Thread(target=self._pump, args=(stream,), daemon=True)
            for stream in (self.process.stdout, self.process.stderr)
        ]
        for t in self._threads:
            t.start()

    def _pump(self, stream):
        for line in stream:
            line = line.rstrip("\n")
            if stream is self.process.stdout and line.startswith("{"):
                with contextlib.suppress(ValueError):
                    self.result = json.loads(line)
                    continue
            if line.startswith("k2e: "):
                self.last_error = line.removeprefix("k2e: ")
            sys.stderr.write(f"[{self.name}] {line}\n")
            sys.stderr.flush()

    def drain(self):
        for t in self._threads:
            t.join(timeout=5)

    @property
    def code(self):
        return self.process.poll()

    def describe_exit(self) -> str:
        code = self.code
        if code is not None and code < 0:
            return f"was killed by {signal.Signals(-code).name}"
        return f"exited with code {code}" + (f" ({self.last_error})" if self.last_error else "")


def launch(command: str, spec) -> dict:
    """Runs `k2e COMMAND` (run or train) for `spec` (a JobSpec with its cluster section) as a
    local cluster; returns the chief's result with every task's under `cluster.tasks`."""
    layout = spec.cluster.roles()
    task_count = sum(layout.values())
    if task_count == 1:
        raise SpecError(
            "--cluster", "the cluster is the chief alone", "add workers=N,ps=M or evaluator=1"
        )
    cluster.check(cluster.Task("chief", 0, {}), spec)
    training_tasks = {r: n for r, n in layout.items() if r != "evaluator"}
    ports = iter(free_ports(sum(training_tasks.values())))
    addresses = {
        role: [f"127.0.0.1:{next(ports)}" for _ in range(n)] for role, n in training_tasks.items()
    }
    configs = tf_configs(layout, addresses)
    shared = tempfile.mkdtemp(prefix="k2e-cluster-")
    spec_file = os.path.join(shared, "spec.json")
    with open(os.open(spec_file, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
        f.write(spec.model_dump_json(exclude_unset=True))
    argv = [sys.executable, "-m", "k2e_core.cli", command, spec_file]
    log.info(
        "local cluster: %s on 127.0.0.1 (%s)",
        ", ".join(f"{n} {r}" for r, n in layout.items()),
        " ".join(f"{r}={a}" for r, a in addresses.items()),
    )
    env = {**os.environ, cluster.SHARED_DIR_ENV: os.path.join(shared, "shared")}
    began = time.perf_counter()
    try:
        tasks = run_tasks(
            {name: (argv, {**env, "TF_CONFIG": tf_config}) for name, tf_config in configs.items()}
        )
    finally:
        shutil.rmtree(shared, ignore_errors=True)
    result = dict(tasks["chief"].result or {})
    result["cluster"] = {
        "layout": layout,
        "wall_seconds": round(time.perf_counter() - began, 3),
        "tasks": {
            name: t.result
            for name, t in tasks.items()
            if name != "chief" and not name.startswith("ps")
        },
    }
    return result


def run_tasks(commands: dict[str, tuple[list[str], dict]]) -> dict[str, _Task]:
    """Starts every task's (argv, env), streams its logs, waits for the chief and the tasks
    that end by themselves, then stops the rest (the ps). Raises when a task fails, after
    stopping all of them."""
    tasks: dict[str, _Task] = {}
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_stopped)
    try:
        for name, (argv, env) in commands.items():
            tasks[name] = _Task(name, argv, {**env, "PYTHONUNBUFFERED": "1"})
        _supervise(tasks)
    finally:
        _stop(tasks.values())
        for t in tasks.values():
            t.drain()
    return tasks


def _raise_stopped(signum, frame):
    raise K2eError(
        "cluster: stopped by SIGTERM; stopped every task (the chief saved a "
        "checkpoint a rerun resumes from)"
    )


def _supervise(tasks: dict[str, _Task]) -> None:
    """Waits for the chief and the tasks that end by themselves; stops everyone on a failure."""
    ending = [t for name, t in tasks.items() if not name.startswith("ps")]
    chief_done_at = None
    while True:
        failed = [t for t in tasks.values() if t.code not in (None, 0)]
        if failed:
            first = failed[0]
            others = [t for t in tasks.values() if t is not first]
            _stop(others)
            raise K2eError(
                f"cluster: {first.name} {first.describe_exit()}; stopped the other "
                "tasks; a rerun resumes from the last checkpoint in model_dir"
            )
        finished_ps = [t for name, t in tasks.items() if name.startswith("ps") and t.code == 0]
        if finished_ps:
            raise K2eError(f"cluster: {finished_ps[0].name} ended while training ran")
        if all(t.code == 0 for t in ending):
            return
        if tasks["chief"].code == 0:
            chief_done_at = chief_done_at or time.monotonic()
            if time.monotonic() - chief_done_at > FINISH_GRACE_SECS:
                late = [t.name for t in ending if t.code is None]
                raise K2eError(
                    f"cluster: the chief finished but {', '.join(late)} did not end "
                    f"within {FINISH_GRACE_SECS}s; stopped them"
                )
        time.sleep(0.2)


def _stop(tasks) -> None:
    """SIGTERM (the chief and workers save a checkpoint), then SIGKILL after a grace period."""
    alive = [t for t in tasks if t.code is None]
    for t in alive:
        with contextlib.suppress(ProcessLookupError):
            t.process.terminate()
    deadline = time.monotonic() + STOP_GRACE_SECS
    for t in alive:
        try:
            t.process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            t.process.kill()
            t.process.wait()
