"""k2e for Kubeflow Pipelines v2: components for the steps of a k2e job
(`kfp_components.components`), the training pipeline (`kfp_components.pipelines`) and its
compiler (`python -m kfp_components.compile`). Compiling never imports TensorFlow."""
