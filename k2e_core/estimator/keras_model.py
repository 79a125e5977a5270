"""The job's Keras model: built by `model.factory` or loaded from `model.path`, checked to be
compiled, and, when subclassed, called through a functional model of its own layers."""

from __future__ import annotations

from k2e_core.errors import SpecError
from k2e_core.estimator import compat, keras_copies, model_files
from k2e_core.estimator.compat import tf
from k2e_core.inputs import data
from k2e_core.objects import ImportFailed, import_object
from k2e_core.spec import JobSpec


def load(spec: JobSpec, custom_objects: dict):
    """The spec's compiled Keras model, built by its factory or loaded from its file; a
    subclassed model is wrapped in a functional model of the same layers."""
    if spec.model.path:
        url = spec.path(spec.model.path)
        try:
            model = model_files.load_keras_model(
                url, custom_objects, spec.model.allow_unsafe_deserialization
            )
        except FileNotFoundError as err:
            raise SpecError(
                "model.path", str(err), "check the URL or save the model first"
            ) from None
        except model_files.UnsafeModelFile as err:
            raise SpecError(
                "model.path",
                str(err),
                "load only files you trust: set model.allow_unsafe_deserialization: "
                "true, or build the model with model.factory",
            ) from None
        except ValueError as err:
            raise SpecError(
                "model.path",
                str(err),
                "save the model with model.save('model.keras') and pass custom_objects",
            ) from None
    else:
        try:
            factory = import_object(spec.model.factory, spec.base_dir)
        except ImportFailed as err:
            raise SpecError("model.factory", str(err), "fix the module") from None
        except ValueError as err:
            raise SpecError("model.factory", str(err), "fix the import path") from None
        # Fresh layer-name counters: the factory names inputs as in a fresh process
        # (Sequential's `dense_input`), whatever this process built before.
        tf.keras.backend.clear_session()
        try:
            model = factory(**spec.model.factory_kwargs)
        except Exception as err:  # user code: report it as bad input, with its own words
            raise SpecError(
                "model.factory",
                f"{spec.model.factory} raised {type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}",
                "fix the factory or model.factory_kwargs",
            ) from None
        if not isinstance(model, tf.keras.Model):
            raise SpecError(
                "model.factory",
                f"{spec.model.factory} returned {type(model).__name__}",
                "return a compiled tf.keras.Model",
            )
    where = "model.factory" if spec.model.factory else "model.path"
    if not getattr(model, "optimizer", None):
        raise SpecError(
            where,
            "the Keras model is not compiled",
            "call model.compile(optimizer, loss, metrics) before returning/saving it",
        )
    if keras_copies.is_subclassed(model):
        groups = list(spec.data.features or {})
        view = keras_copies.functional_view(model, groups[0] if len(groups) == 1 else None)
        if view is None:
            raise SpecError(
                where,
                f"the subclassed model {type(model).__name__} was never "
                "called, so its inputs are unknown",
                "call it once on a batch (model(x)) or fit it before returning it",
            )
        if spec.model.checkpoint_format == "saver":
            raise SpecError(
                "model.checkpoint_format",
                "saver checkpoints name variables by "
                "layer names, which the layers inside a subclassed model do not "
                "keep between copies",
                "leave checkpoint_format at checkpoint: k2e "
                "calls the model from a functional model, which supports it",
            )
        model = view
    return model


def model_io(model) -> data.ModelIO:
    """What the data must feed this (Keras 2) model."""
    return data.model_io(
        inputs={
            name: (tuple(t.shape[1:]), t.dtype.name)
            for name, t in zip(model.input_names, model.inputs)
        },
        ragged=[
            name
            for name, t in zip(model.input_names, model.inputs)
            if isinstance(t.type_spec, tf.RaggedTensorSpec)
        ],
        outputs={name: tuple(t.shape) for name, t in zip(model.output_names, model.outputs)},
        output_keys=keras_copies.output_keys_of(model),
        loss=compat.compile_args(model).get("loss"),
    )


def run_loss(model):
    """`run_loss(features, labels, sample_weights)`: the compiled loss on one batch."""

    def run(features, labels, weights):
        model.compiled_loss(labels, model(features, training=False), sample_weight=weights)

    return run
