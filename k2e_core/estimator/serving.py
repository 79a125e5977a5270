"""Using a published version: load it (downloaded and checked when remote) and predict."""

from __future__ import annotations

import shutil
import tempfile

import numpy as np

from k2e_core import signatures, storage
from k2e_core.errors import SpecError
from k2e_core.estimator.compat import tf
from k2e_core.storage import publish


def predict_version(version_url: str, inputs, signature: str = "serving_default") -> dict:
    """Runs `signature` of the SavedModel at `version_url` on `inputs` (rows for a
    single-input model, or {input name: rows}; for a signature of serialized tf.Examples,
    {feature: rows} is sent as tf.Examples)."""
    staging = None
    try:
        if storage.is_local(version_url):
            path = storage.local_path(version_url)
        else:
            staging = tempfile.mkdtemp(prefix="k2e-serve-")
            publish.download_version(version_url, staging)
            path = staging
        fn = tf.saved_model.load(path).signatures[signature]
        specs = fn.structured_input_signature[1]
        if isinstance(inputs, dict) and set(inputs) != set(specs) and _takes_examples(specs):
            inputs = {next(iter(specs)): signatures.serialized_examples(inputs)}
        if not isinstance(inputs, dict):
            if len(specs) != 1:
                raise ValueError(f"{signature} takes inputs {sorted(specs)}; pass a dict")
            inputs = {next(iter(specs)): inputs}
        feed = {
            name: tf.constant(np.asarray(inputs[name]), dtype=specs[name].dtype) for name in specs
        }
        outputs = {name: _plain(value.numpy()) for name, value in fn(**feed).items()}
        return {"signature": signature, "outputs": outputs}
    finally:
        if staging:
            shutil.rmtree(staging, ignore_errors=True)


def predict_step(version_url: str, overrides=None, inputs=None, signature=None) -> dict:
    """`k2e predict`: `signature` (default serving_default) of the version at `version_url`
    on `inputs`, with the storage options `overrides` give (`storage.options.s3.key`...).
    Result: {export_path, signature, outputs}."""
    from k2e_core.spec import apply_overrides

    options = apply_overrides({}, overrides).get("storage", {}).get("options")
    signature = signature or "serving_default"
    with storage.configured(options):
        if not storage.exists(storage.join(version_url, "saved_model.pb")):
            raise SpecError(
                "version",
                f"no SavedModel at {storage.redact(version_url)}",
                "pass a published version's URL (export_path in the export step's result)",
            )
        if inputs is None:
            raise SpecError("--inputs", "no rows to predict", 'pass e.g. --inputs "[[5.1, 3.5]]"')
        try:
            result = predict_version(version_url, inputs, signature)
        except KeyError as err:
            what = "signature" if err.args[0] == signature else "input"
            raise SpecError(
                f"--{what}" if what == "signature" else "--inputs",
                f"{storage.redact(version_url)} has no {what} {err.args[0]!r}",
                "see its signatures with: saved_model_cli show --all --dir VERSION",
            ) from None
        except (ValueError, tf.errors.InvalidArgumentError) as err:
            lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
            why = next((ln for ln in reversed(lines) if not ln.startswith("[[")), "")[:200]
            raise SpecError(
                "--inputs",
                f"the rows do not fit {signature} of {storage.redact(version_url)} ({why})",
                "send one row per example, by input name for several inputs",
            ) from None
    return {"export_path": storage.redact(version_url), **result}


def _takes_examples(specs) -> bool:
    """A signature of serialized tf.Examples (TF Serving's Classify and Regress APIs)."""
    return len(specs) == 1 and next(iter(specs.values())).dtype == tf.string


def _plain(array: np.ndarray):
    """JSON-ready: class names (bytes) as text."""
    if array.dtype == object:
        return np.vectorize(lambda v: v.decode() if isinstance(v, bytes) else v, otypes=[object])(
            array
        ).tolist()
    return array.tolist()
