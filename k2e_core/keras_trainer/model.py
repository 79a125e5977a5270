"""The job's Keras 3 model: built by `model.factory` or loaded from `model.path`, checked to be
compiled and functional (or Sequential), with its inputs named as the Estimator trainer's
Keras 2 names them, so that one spec and one signature fit both trainers."""

from __future__ import annotations

import os

import keras

from k2e_core import storage
from k2e_core.errors import SpecError, first_line
from k2e_core.inputs import data
from k2e_core.keras_trainer import compat
from k2e_core.objects import ImportFailed, import_object
from k2e_core.spec import JobSpec
from k2e_core.tf_runtime import tf

#: Names Keras 3 gives an input nobody named.
_AUTOMATIC = ("keras_tensor", "input_layer")


def load(spec: JobSpec, objects: dict, staging_dir: str):
    """The spec's compiled Keras 3 model."""
    where = "model.factory" if spec.model.factory else "model.path"
    if spec.model.path:
        model = _load_file(spec, objects, staging_dir)
    else:
        try:
            factory = import_object(spec.model.factory, spec.base_dir)
        except (ImportFailed, ValueError) as err:
            raise SpecError("model.factory", str(err), "fix the import path") from None
        keras.backend.clear_session()  # input names as in a fresh process
        if spec.run_config.tf_random_seed is not None:  # as the Estimator's graph seed
            keras.utils.set_random_seed(spec.run_config.tf_random_seed)
        try:
            model = factory(**spec.model.factory_kwargs)
        except Exception as err:  # user code: its own words, as bad input
            raise SpecError(
                "model.factory",
                f"{spec.model.factory} raised {type(err).__name__}: {first_line(err, 160)}",
                "fix the factory or model.factory_kwargs",
            ) from None
        if not isinstance(model, keras.Model):
            raise SpecError(
                "model.factory",
                f"{spec.model.factory} returned {type(model).__name__}",
                "return a compiled keras.Model",
            )
    if not getattr(model, "compiled", False) or model.optimizer is None:
        raise SpecError(
            where,
            "the Keras model is not compiled",
            "call model.compile(optimizer, loss, metrics) before returning/saving it",
        )
    try:
        model.inputs  # noqa: B018 - a subclassed model has none
    except (AttributeError, ValueError):
        raise SpecError(
            where,
            f"the subclassed model {type(model).__name__} has no inputs the trainer can see",
            "build it functionally (keras.Input ... keras.Model) or as a Sequential, or use "
            "trainer: estimator",
        ) from None
    return model


def _load_file(spec: JobSpec, objects: dict, staging_dir: str):
    url = spec.path(spec.model.path)
    if not storage.exists(url):
        raise SpecError(
            "model.path",
            f"no Keras model at {storage.redact(url)}{storage.why_missing(url)}",
            "save the model first",
        )
    local = storage.fetch(url, os.path.join(staging_dir, "model"))
    try:
        return keras.saving.load_model(
            local, custom_objects=objects, safe_mode=not spec.model.allow_unsafe_deserialization
        )
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise SpecError(
            "model.path",
            f"cannot load a Keras model from {storage.redact(url)}: {first_line(err, 200)}",
            "save the model with model.save('model.keras') from Keras 3 and pass "
            "custom_objects; a Keras 2 file trains with trainer: estimator",
        ) from None


def input_names(model) -> list[str]:
    """The model's input names: its own, or for inputs Keras 3 named itself, the Keras 2 name
    (a Sequential's `<first layer>_input`)."""
    names = []
    for tensor in model.inputs:
        name = tensor.name
        if name.startswith(_AUTOMATIC) and isinstance(model, keras.Sequential):
            name = f"{model.layers[0].name}_input"
        names.append(name)
    return names


def output_names(model) -> list[str]:
    """The output layers' names (a Sequential's last layer)."""
    if isinstance(model, keras.Sequential):
        return [model.layers[-1].name]
    return list(model.output_names)


def output_keys(model) -> list[str]:
    """Prediction keys aligned with `output_names`: dict keys where outputs are a dict."""
    if isinstance(compat.outputs_struct(model), dict):
        return sorted(compat.outputs_struct(model))
    return output_names(model)


def model_io(model) -> data.ModelIO:
    names = input_names(model)
    return data.model_io(
        inputs={n: (tuple(t.shape[1:]), t.dtype) for n, t in zip(names, model.inputs)},
        ragged=[n for n, t in zip(names, model.inputs) if t.ragged],
        outputs={n: tuple(t.shape) for n, t in zip(output_names(model), model.outputs)},
        output_keys=output_keys(model),
        loss=model.loss,
    )


def positional(model, names: list[str]):
    """features {input name: tensor} -> what the model is called with."""
    if isinstance(compat.inputs_struct(model), dict):  # Functional({name: Input})
        return lambda features: {t.name: features[n] for n, t in zip(names, model.inputs)}
    if len(names) == 1:
        return lambda features: features[names[0]]
    return lambda features: tuple(features[n] for n in names)  # tf.data stacks a list


def predictions(model, outputs) -> dict:
    """A model call's outputs as {output key: tensor}."""
    if isinstance(outputs, dict):
        return outputs
    return dict(zip(output_keys(model), tf.nest.flatten(outputs)))


def run_loss(model, names: list[str]):
    """`run_loss(features, labels, sample_weights)`: the compiled loss on one batch."""
    to_model = positional(model, names)

    def run(features, labels, weights):
        x = to_model(features)
        model.compute_loss(x=x, y=labels, y_pred=model(x, training=False), sample_weight=weights)

    return run
