"""Waits for a Kubeflow TFJob in Airflow's triggerer, so a deferred K2eJobOperator holds no
worker slot while the TFJob trains."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


def tfjob_api(kubernetes_conn_id: str | None, kube_config: str | None, kube_context: str | None):
    """The Kubernetes custom-objects API: through the cncf-kubernetes provider's
    KubernetesHook with `kubernetes_conn_id`, else from `kube_config` (in-cluster config,
    then $KUBECONFIG or ~/.kube/config)."""
    if kubernetes_conn_id:
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

        return KubernetesHook(conn_id=kubernetes_conn_id).custom_object_client
    from k2e_core.distributed.tfjob import _api

    return _api(kube_config, kube_context)


class TFJobTrigger(BaseTrigger):
    """Polls the TFJob `job` (`{namespace, name, submitted}`, as k2e's tfjob.start returns
    it) every `poll_interval` seconds. Its one event holds `job` and its `state`:
    Succeeded or Failed with the TFJob's `condition`; `timeout` after `timeout` seconds
    (the TFJob keeps running) with the `last` state; `error` with a `message` when the API
    cannot be read."""

    def __init__(
        self,
        job: dict,
        poll_interval: float,
        timeout: float | None = None,
        kubernetes_conn_id: str | None = None,
        kube_config: str | None = None,
        kube_context: str | None = None,
        started: float | None = None,
    ):
        super().__init__()
        self.job = job
        self.poll_interval, self.timeout = poll_interval, timeout
        self.kubernetes_conn_id = kubernetes_conn_id
        self.kube_config, self.kube_context = kube_config, kube_context
        self.started = started if started is not None else time.time()

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "job": self.job,
                "poll_interval": self.poll_interval,
                "timeout": self.timeout,
                "kubernetes_conn_id": self.kubernetes_conn_id,
                "kube_config": self.kube_config,
                "kube_context": self.kube_context,
                "started": self.started,  # a restarted triggerer keeps the deadline
            },
        )

    async def run(self):
        from k2e_core.distributed import tfjob

        api = await asyncio.to_thread(
            tfjob_api, self.kubernetes_conn_id, self.kube_config, self.kube_context
        )
        seen = None
        while True:
            try:
                job = await asyncio.to_thread(
                    api.get_namespaced_custom_object,
                    tfjob.GROUP,
                    tfjob.VERSION,
                    self.job["namespace"],
                    tfjob.PLURAL,
                    self.job["name"],
                )
            except Exception as err:  # the task fails with one line; a retry re-attaches
                from k2e_core.errors import first_line

                yield TriggerEvent({"job": self.job, "state": "error", "message": first_line(err)})
                return
            state, condition = tfjob.state(job)
            if state != seen:
                self.log.info("%s", tfjob.state_line(self.job["name"], state, condition))
                seen = state
            if state in ("Succeeded", "Failed"):
                yield TriggerEvent({"job": self.job, "state": state, "condition": condition})
                return
            if self.timeout and time.time() - self.started > self.timeout:
                yield TriggerEvent({"job": self.job, "state": "timeout", "last": state})
                return
            await asyncio.sleep(self.poll_interval)
