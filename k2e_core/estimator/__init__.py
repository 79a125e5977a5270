"""The Estimator trainer (trainer: estimator, TensorFlow 2.15): the Keras model converted to an
Estimator (`conversion`: the drop-in `model_to_estimator`, built from `keras_copies`,
`model_fn`, `keras_checkpoints` and `model_files`), training, export, pre-made Estimators,
and `trainer.EstimatorTrainer`, what the job steps use.

Only `compat` reaches into TensorFlow's, Keras' and the Estimator's private modules and
attributes. Importing this package itself loads nothing.
"""
