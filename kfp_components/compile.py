"""Compiles a k2e pipeline to KFP IR YAML (no TensorFlow needed).

    python -m kfp_components.compile [OUT.yaml] [--pipeline training|job|tfjob]

`training` (default): convert -> train -> evaluate -> export, one task each, written to
k2e-training.yaml; `job`: the whole job as one task, written to k2e-job.yaml; `tfjob`: the
job as the spec's distributed TFJob, written to k2e-tfjob.yaml. The components
name the image in $K2E_IMAGE (default k2e:0.1.0) as their base image.
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    from kfp import compiler

    from kfp_components import pipelines

    parser = argparse.ArgumentParser(
        prog="python -m kfp_components.compile", description=__doc__.splitlines()[0]
    )
    parser.add_argument("out", nargs="?", help="output file (default k2e-<pipeline>.yaml)")
    parser.add_argument("--pipeline", choices=["training", "job", "tfjob"], default="training")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    pipeline = {
        "training": pipelines.training_pipeline,
        "job": pipelines.job_pipeline,
        "tfjob": pipelines.tfjob_pipeline,
    }
    path = args.out or f"k2e-{args.pipeline}.yaml"
    compiler.Compiler().compile(pipeline[args.pipeline], path)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
