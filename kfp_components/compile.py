"""Compiles a k2e pipeline to KFP IR YAML (no TensorFlow needed).

    python -m kfp_components.compile [OUT.yaml] [--pipeline training|job|tfjob] [--tasks FILE]

`training` (default): convert -> train -> evaluate -> export, one task each, written to
k2e-training.yaml; `job`: the whole job as one task, written to k2e-job.yaml; `tfjob`: the
job as the spec's distributed TFJob, written to k2e-tfjob.yaml. `--tasks`: a YAML/JSON file
of each task's CPU, memory, accelerators, retries, timeout and credentials secret
(kfp_components.tasks). The components name the image in $K2E_IMAGE as their base image.
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    from kfp import compiler

    from k2e_core.errors import SpecError
    from kfp_components import components, pipelines
    from kfp_components.tasks import load_tasks

    parser = argparse.ArgumentParser(
        prog="python -m kfp_components.compile", description=__doc__.splitlines()[0]
    )
    parser.add_argument("out", nargs="?", help="output file (default k2e-<pipeline>.yaml)")
    parser.add_argument("--pipeline", choices=["training", "job", "tfjob"], default="training")
    parser.add_argument("--tasks", help="YAML/JSON file of the tasks' cluster settings")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        built = pipelines.build(load_tasks(args.tasks))
    except SpecError as err:
        print(f"{parser.prog}: {err}", file=sys.stderr)
        return 2
    path = args.out or f"k2e-{args.pipeline}.yaml"
    compiler.Compiler().compile(getattr(built, args.pipeline), path)
    if components.IMAGE == components.PLACEHOLDER_IMAGE:
        print(
            f"note: the tasks run the placeholder image {components.IMAGE}: push the k2e "
            "image where your cluster pulls from and compile with K2E_IMAGE=<that reference>",
            file=sys.stderr,
        )
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
