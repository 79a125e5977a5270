"""Every private Keras 3 attribute the Keras trainer relies on, in one place (what breaks
first when constraints-keras.txt moves Keras)."""

from __future__ import annotations


def inputs_struct(model):
    """A functional model's inputs as it was built: a dict where it takes a dict."""
    return getattr(model, "_inputs_struct", None)


def outputs_struct(model):
    """A functional model's outputs as it was built: a dict where it returns a dict."""
    return getattr(model, "_outputs_struct", None)


def optimizer_slot(optimizer, variable, slot: str):
    """The built optimizer's `slot` variable (Adam's "momentum", "velocity") for a model
    variable: Keras 3 names it after the variable's path, `<path with _>_<slot>`."""
    name = f"{variable.path.replace('/', '_')}_{slot}"
    found = [v for v in optimizer.variables if v.name == name]
    return found[0] if len(found) == 1 else None
