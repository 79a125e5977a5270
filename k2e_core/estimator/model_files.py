"""Keras models saved to files, at any fsspec URL (`.keras`, `.h5`, SavedModel), loaded
without running bytecode unless allowed."""

from __future__ import annotations

import json
import logging
import os
import tempfile

from k2e_core import storage
from k2e_core.errors import first_line
from k2e_core.estimator.compat import tf
from k2e_core.objects import resolve_custom_objects

log = logging.getLogger("k2e.conversion")


class UnsafeModelFile(ValueError):
    """A saved model holds Python bytecode (a Lambda layer's function) that loading would run."""


def load_keras_model(url: str, custom_objects=None, allow_unsafe_deserialization=False):
    """Loads a compiled Keras model from any fsspec URL (.keras, .h5 or SavedModel dir).

    Lambda layers built from a `lambda` are stored as marshalled bytecode, which Keras runs
    while loading; Keras' `safe_mode` refuses them in `.keras` files only. Here every format
    is refused unless `allow_unsafe_deserialization` (for files you trust)."""
    if not storage.exists(url):
        raise FileNotFoundError(
            f"no Keras model at {storage.redact(url)}{storage.why_missing(url)}"
        )
    with tempfile.TemporaryDirectory(prefix="k2e-model-") as tmp:
        local = storage.fetch(url, tmp)
        if not allow_unsafe_deserialization:
            found = bytecode_layers(local)
            if found:
                raise UnsafeModelFile(
                    f"{storage.redact(url)} holds Lambda layer(s) {found} whose Python bytecode "
                    "would run while the file loads"
                )
        try:
            model = tf.keras.models.load_model(
                local,
                custom_objects=resolve_custom_objects(custom_objects),
                compile=True,
                **({"safe_mode": False} if allow_unsafe_deserialization else {}),
            )
        except (OSError, ValueError, TypeError, KeyError) as err:
            raise ValueError(
                f"cannot load a Keras model from {storage.redact(url)}: {first_line(err)}"
            ) from err
    return model


def bytecode_layers(local_path: str) -> list:
    """Names of the Lambda layers a saved model stores as bytecode (read from its config,
    nothing loaded): `.h5` model_config, `.keras` config.json, SavedModel keras_metadata.pb."""
    try:
        configs = _saved_configs(local_path)
    except Exception:  # an unreadable file: loading it fails with its own error
        return []
    found = []

    def walk(node):
        if isinstance(node, dict):
            config = node.get("config")
            if (
                node.get("class_name") == "Lambda"
                and isinstance(config, dict)
                and (
                    config.get("function_type") == "lambda"
                    or isinstance(config.get("function"), (list, tuple))
                )
            ):
                found.append(config.get("name", "lambda"))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for text in configs:
        try:
            walk(json.loads(text))
        except ValueError:
            continue
    return sorted(set(found))


def _saved_configs(local_path: str) -> list:
    configs = []
    if os.path.isdir(local_path):
        metadata = os.path.join(local_path, "keras_metadata.pb")
        if os.path.exists(metadata):
            from keras.protobuf import saved_metadata_pb2

            saved = saved_metadata_pb2.SavedMetadata()
            with open(metadata, "rb") as f:
                saved.ParseFromString(f.read())
            configs = [node.metadata for node in saved.nodes]
    elif local_path.endswith((".h5", ".hdf5")):
        import h5py

        with h5py.File(local_path, "r") as f:
            configs = [f.attrs.get("model_config") or "{}"]
    elif local_path.endswith(".keras"):
        import zipfile

        with zipfile.ZipFile(local_path) as archive:
            configs = [archive.read("config.json")]
    return configs
