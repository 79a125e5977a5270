"""What each step read and wrote, as OpenLineage datasets: (namespace, name) pairs, named as
OpenLineage's naming conventions name files and object-store paths.

    /data/iris.csv                       ("file", "/data/iris.csv")
    s3://raw/iris/2026-11-01/*.csv       ("s3://raw", "iris/2026-11-01")   a glob: its folder
    gs://serving/iris/3                  ("gs://serving", "iris/3")
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit

#: The data splits each step reads (evaluation reads the training files when the spec names
#: no eval files).
READS = {
    "validate": ("train", "eval"),
    "convert": (),
    "train": ("train",),
    "evaluate": ("eval",),
    "export": ("eval",),
    "run": ("train", "eval"),
}


def dataset(url: str) -> tuple[str, str]:
    """(namespace, name) of a file, folder or glob URL; a glob names the folder it matches in."""
    parts = url.split("/")
    for i, part in enumerate(parts):
        if re.search(r"[*?[]", part):
            url = "/".join(parts[:i]) or "/"
            break
    split = urlsplit(url)
    if split.scheme in ("", "file"):
        return "file", os.path.abspath(split.path if split.scheme else url)
    scheme = "gs" if split.scheme == "gcs" else split.scheme
    return f"{scheme}://{split.netloc}", split.path.strip("/") or "/"


def step_datasets(step: str, spec, result: dict) -> tuple[list, list]:
    """(inputs, outputs) of one step run with `spec` (a JobSpec) that returned `result`."""
    inputs = []
    for split in READS[step]:
        files = spec.data.train if split == "train" or spec.data.eval is None else spec.data.eval
        inputs += [dataset(f) for f in files.files]
    model_dir = result.get("model_dir") or spec.model_dir
    outputs = []
    if step in ("convert", "train", "run") and model_dir:
        outputs.append(dataset(model_dir))  # checkpoints
    if step in ("train", "evaluate", "export") and model_dir:
        inputs.append(dataset(model_dir))
    if step in ("export", "run") and result.get("export_path"):
        outputs.append(dataset(result["export_path"]))  # the version, or the kept candidate
    return list(dict.fromkeys(inputs)), list(dict.fromkeys(outputs))
