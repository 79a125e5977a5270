"""TensorFlow, imported once and quietly, on whichever trainer's stack this interpreter has
(k2e_core.versions). Modules both trainers share (inputs, summaries) import `tf` from here;
each trainer's own module adds what its stack needs.

TensorFlow's C++ info logs, deprecation notices and INFO chatter are turned down
(K2E_TF_LOGS=1 keeps them)."""

import contextlib
import logging
import os
import sys
import warnings

from k2e_core.versions import check_stack

check_stack()
QUIET = os.environ.get("K2E_TF_LOGS") != "1"
if QUIET:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # read when TensorFlow loads
    for _module in ("tensorflow", "keras", "tensorflow_estimator", "absl", "h5py"):
        warnings.filterwarnings("ignore", module=_module)
        warnings.filterwarnings("ignore", module=_module + r"\..*")


@contextlib.contextmanager
def _stderr_silenced():
    """TensorFlow 2.21's C++ start-up lines (absl's "All log messages before
    absl::InitializeLog()", oneDNN's notice) ignore TF_CPP_MIN_LOG_LEVEL: the import's
    stderr goes to /dev/null. Python errors still reach the caller as exceptions."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


with _stderr_silenced() if QUIET else contextlib.nullcontext():
    import tensorflow as tf  # noqa: E402

if QUIET:
    import absl.logging  # noqa: E402 - ships with TensorFlow

    tf.get_logger().setLevel(logging.ERROR)
    tf.autograph.set_verbosity(0)
    absl.logging.set_verbosity(absl.logging.ERROR)
