"""Stopping training on request (SIGTERM, an orchestrator's kill): the request, set from any
thread or a signal handler, and what a trainer raises once its checkpoint is saved."""

from __future__ import annotations

import threading

from k2e_core.errors import K2eError

_stop_requested = threading.Event()


class Stopped(K2eError):
    """Training stopped on request after saving a checkpoint."""

    def __init__(self, step: int, checkpoint: str):
        self.step, self.checkpoint = step, checkpoint
        super().__init__(
            f"training stopped on request at step {step}; checkpoint {checkpoint} is saved "
            "and a rerun resumes from it"
        )


def request_stop() -> None:
    """Asks a running training loop, from any thread or a signal handler, to save and stop."""
    _stop_requested.set()


def clear_stop_request() -> None:
    _stop_requested.clear()


def stop_requested() -> bool:
    return _stop_requested.is_set()
