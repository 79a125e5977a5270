"""Errors that reach users as one line, with the CLI's exit code; `describe` is the one
policy the CLI, the Airflow operators and the KFP components apply to any exception.

    exit 2  bad input, found before any training: fix the named field; retrying cannot help
    exit 3  a failure a rerun would repeat (a diverging loss, an export unlike the model)
    exit 1  any other failure (storage, a killed task): a retry may succeed
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

#: Exit codes of failures that retrying cannot mend (bad input, a repeatable failure).
NOT_RETRYABLE = (2, 3)


class K2eError(Exception):
    """A failure during a step (exit code 1; `retryable = False`: exit code 3)."""

    retryable = True

    @property
    def exit_code(self) -> int:
        return 1 if self.retryable else 3


class SpecError(K2eError, ValueError):
    """Bad input (exit code 2): names the field, says what is wrong and how to fix it."""

    retryable = False
    exit_code = 2

    def __init__(self, field: str, problem: str, fix: str = ""):
        self.field, self.problem, self.fix = field, problem, fix
        super().__init__(f"{field}: {problem}" + (f"; {fix}" if fix else ""))


class Diverged(K2eError):
    """The loss became NaN or infinite: nothing after it was saved, and a rerun of the same
    job diverges the same way."""

    retryable = False

    @classmethod
    def at(cls, step: int, kept: str | None) -> Diverged:
        """The line both trainers give: the step, the checkpoint kept, what to change."""
        return cls(
            f"training diverged: the loss is NaN at step {step} (nothing was saved after it"
            f"{'; ' + os.path.basename(kept) + ' is kept' if kept else ''}); lower the learning "
            "rate, or look for NaN/inf in the data (k2e validate --full)"
        )


class ExportMismatch(K2eError):
    """The exported SavedModel does not predict what the Keras model predicts."""

    retryable = False


#: What TensorFlow adds to an op's message: the function and device it ran in, the op.
_TF_NOISE = re.compile(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:[^\]]*\].*$")


def first_line(err: BaseException, limit: int = 300) -> str:
    """An exception's first line of text (TensorFlow's messages run to pages, wrapped in
    function and op names), or its type."""
    text = str(getattr(err, "message", None) or err).strip().splitlines()
    return _TF_NOISE.sub("", re.sub(r"\s+", " ", text[0]))[:limit] if text else type(err).__name__


@dataclass(frozen=True)
class Failure:
    """How an exception reaches a user: `line` is its one line, `exit_code` the CLI's,
    `retryable` whether an orchestrator should try again, `expected` False for errors k2e
    did not anticipate (the CLI offers their traceback with -v)."""

    exit_code: int
    line: str
    retryable: bool
    expected: bool = True

    @property
    def bad_input(self) -> bool:
        return self.exit_code == 2


def describe(err: BaseException) -> Failure:
    """The one error policy: what `err` means for the user and the orchestrator."""
    if isinstance(err, SpecError):
        return Failure(err.exit_code, f"error: {err}", retryable=False)
    if isinstance(err, K2eError):
        return Failure(err.exit_code, f"failed: {err}", retryable=err.retryable)
    if isinstance(err, KeyboardInterrupt):
        return Failure(130, "interrupted", retryable=True)
    return Failure(
        1, f"failed: {type(err).__name__}: {first_line(err)}", retryable=True, expected=False
    )
