"""TensorFlow, imported once: after checking the installed stack, with its log noise
turned down (see k2e_core.logs)."""

from k2e_core.logs import quiet_tensorflow
from k2e_core.versions import check_stack

check_stack()
quiet_tensorflow()

import tensorflow as tf  # noqa: E402

__all__ = ["tf"]
