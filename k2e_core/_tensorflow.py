"""TensorFlow, imported once with its log noise turned down (see k2e_core.logs)."""

from k2e_core.logs import quiet_tensorflow

quiet_tensorflow()

import tensorflow as tf  # noqa: E402

__all__ = ["tf"]
