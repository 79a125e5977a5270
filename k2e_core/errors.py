"""Errors that reach users as one line, with the CLI's exit code."""

from __future__ import annotations

import re


class K2eError(Exception):
    """A failure during a step (exit code 1)."""

    exit_code = 1


class SpecError(K2eError, ValueError):
    """Bad input (exit code 2): names the field, says what is wrong and how to fix it."""

    exit_code = 2

    def __init__(self, field: str, problem: str, fix: str = ""):
        self.field, self.problem, self.fix = field, problem, fix
        super().__init__(f"{field}: {problem}" + (f"; {fix}" if fix else ""))


class ExportMismatch(K2eError):
    """The exported SavedModel does not predict what the Keras model predicts."""


#: What TensorFlow adds to an op's message: the function and device it ran in, the op.
_TF_NOISE = re.compile(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:[^\]]*\].*$")


def first_line(err: BaseException, limit: int = 300) -> str:
    """An exception's first line of text (TensorFlow's messages run to pages, wrapped in
    function and op names), or its type."""
    text = str(getattr(err, "message", None) or err).strip().splitlines()
    return _TF_NOISE.sub("", re.sub(r"\s+", " ", text[0]))[:limit] if text else type(err).__name__
