"""Kubernetes stand-ins for tests on a machine without a cluster.

`run_replicas` does what the training operator and the kubelet do with a TFJob's replicas:
one process per replica running the container's command and args with its env, the
TF_CONFIG the operator computes for it (127.0.0.1 ports instead of service names) and the
shared volume at a local directory. `ApiServer` answers the Kubernetes API calls a
submitter makes for TFJobs (create, get, delete) and runs each created TFJob's replicas
that way, moving its status through Created, Running and Succeeded or Failed.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from k2e_core.distributed import cluster, launcher, tfjob
from k2e_core.errors import K2eError

BIN = os.path.dirname(sys.executable)


def run_replicas(manifest: dict, volume_dir: str) -> dict:
    """Runs every replica of `manifest` here; returns the launcher's tasks (results, exits)."""
    replicas = manifest["spec"]["tfReplicaSpecs"]
    counts = {rtype.lower(): r["replicas"] for rtype, r in replicas.items()}
    ports = iter(launcher.free_ports(sum(n for role, n in counts.items() if role != "evaluator")))
    hosts = {
        role: [f"127.0.0.1:{next(ports)}" for _ in range(n)]
        for role, n in counts.items()
        if role != "evaluator"
    }
    commands = {}
    for rtype, replica in replicas.items():
        role = rtype.lower()
        pod = replica["template"]["spec"]
        (container,) = pod["containers"]
        assert container["name"] == tfjob.CONTAINER  # where the operator puts TF_CONFIG
        mounts = {m["mountPath"]: volume_dir for m in container.get("volumeMounts", [])}
        env = dict(os.environ)
        for item in container["env"]:
            value = item["value"]
            for mount, local in mounts.items():
                value = value.replace(mount, local)
            env[item["name"]] = value
        argv = [os.path.join(BIN, container["command"][0]), *container["args"]]
        for index in range(replica["replicas"]):
            env_i = {**env, "TF_CONFIG": tfjob.tf_config(manifest, role, index, hosts)}
            commands[cluster.Task(role, index, hosts).name] = (argv, env_i)
    return launcher.run_tasks(commands)


class ApiServer:
    """The TFJob part of a Kubernetes API server, over HTTP on 127.0.0.1."""

    def __init__(self, volume_dir: str):
        self.volume_dir = volume_dir
        self.jobs: dict[tuple[str, str], dict] = {}
        self.created = []  # names, in the order they were created
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self):
                m = re.fullmatch(
                    r"/apis/kubeflow\.org/v1/namespaces/([^/]+)/tfjobs(?:/([^/?]+))?",
                    self.path.split("?")[0],
                )
                return (m.group(1), m.group(2)) if m else (None, None)

            def do_POST(self):
                namespace, _ = self._route()
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                key = (namespace, body["metadata"]["name"])
                if namespace is None:
                    return self._send(404, _status(404, "NotFound", self.path))
                if key in server.jobs:
                    return self._send(
                        409,
                        _status(
                            409, "AlreadyExists", f'tfjobs.kubeflow.org "{key[1]}" already exists'
                        ),
                    )
                body["status"] = {"conditions": [_condition("Created")]}
                server.jobs[key] = body
                server.created.append(key[1])
                threading.Thread(target=server._operate, args=(body,), daemon=True).start()
                self._send(201, body)

            def do_GET(self):
                key = self._route()
                if key not in server.jobs:
                    return self._send(404, _status(404, "NotFound", f"tfjob {key[1]} not found"))
                self._send(200, server.jobs[key])

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}"
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    def _operate(self, job):
        job["status"]["conditions"].append(_condition("Running"))
        try:
            run_replicas(job, self.volume_dir)
        except K2eError as err:
            job["status"]["conditions"].append(_condition("Failed", "TFJobFailed", str(err)))
            return
        job["status"]["conditions"].append(
            _condition("Succeeded", "TFJobSucceeded", "TFJob successfully completed.")
        )

    def kubeconfig(self, path) -> str:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "local",
            "clusters": [{"name": "local", "cluster": {"server": self.url}}],
            "users": [{"name": "local", "user": {}}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": "local"}}],
        }
        with open(path, "w") as f:
            json.dump(config, f)
        return str(path)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._http.shutdown()
        self._http.server_close()


def _condition(kind, reason="", message=""):
    return {"type": kind, "status": "True", "reason": reason, "message": message}


def _status(code, reason, message):
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
