"""TensorFlow, imported once and quietly, on whichever trainer's stack this interpreter has
(k2e_core.versions). Modules both trainers share (inputs, summaries) import `tf` from here;
each trainer's own module adds what its stack needs.

TensorFlow's C++ info logs, deprecation notices and INFO chatter are turned down
(K2E_TF_LOGS=1 keeps them)."""

import logging
import os
import warnings

from k2e_core.versions import check_stack

check_stack()
QUIET = os.environ.get("K2E_TF_LOGS") != "1"
if QUIET:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # read when TensorFlow loads
    for _module in ("tensorflow", "keras", "tensorflow_estimator", "absl", "h5py"):
        warnings.filterwarnings("ignore", module=_module)
        warnings.filterwarnings("ignore", module=_module + r"\..*")

import tensorflow as tf  # noqa: E402

if QUIET:
    import absl.logging  # noqa: E402 - ships with TensorFlow

    tf.get_logger().setLevel(logging.ERROR)
    tf.autograph.set_verbosity(0)
    absl.logging.set_verbosity(absl.logging.ERROR)
