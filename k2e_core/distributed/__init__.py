"""Distributed training: `TF_CONFIG` tasks, local clusters of processes, and TFJobs for the
Kubeflow training operator. TensorFlow is imported only inside the functions that train."""
