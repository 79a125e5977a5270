"""The TensorFlow part of k2e: the Keras model as an Estimator, its input pipelines,
training, checkpoints, warm starts, export and serving.

Only modules here import TensorFlow, and only `compat` reaches into TensorFlow's, Keras' and
the Estimator's private modules and attributes. Importing this package itself loads nothing.
"""
