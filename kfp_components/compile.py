"""Compiles the k2e training pipeline to KFP IR YAML (no TensorFlow needed).

    python -m kfp_components.compile [k2e-training.yaml]

The components name the image in $K2E_IMAGE (default k2e:0.1.0) as their base image.
"""

from __future__ import annotations

import sys


def main(argv=None) -> int:
    from kfp import compiler

    from kfp_components.pipelines import training_pipeline

    args = sys.argv[1:] if argv is None else argv
    path = args[0] if args else "k2e-training.yaml"
    compiler.Compiler().compile(training_pipeline, path)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
