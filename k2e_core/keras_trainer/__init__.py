"""The Keras trainer (trainer: keras): Keras 3 on TensorFlow 2.21, one process, the Estimator
trainer's model_dir contract, published layout and signatures. Needs the `keras` extra
(Python 3.12, .venv-keras)."""

from k2e_core import tf_runtime  # noqa: F401 - TensorFlow quietly, before Keras loads it
