"""Adapted Keras preprocessing layers, in a form Estimator graphs can build.

What `adapt` learns is neither in a layer's config nor in its weights: a vocabulary lives in
a lookup table, Discretization's boundaries in a plain attribute. The copies an Estimator
builds in each graph start from the config, so without this their lookups fail with `Table
not initialized` and Discretization buckets everything into one bin. Here the learnt state
is written into the config (graph constants, tables initialised with the graph) and the
lookup layers report their vocabulary size as a number in graph mode too, which one-hot,
multi-hot and tf-idf outputs need for their shape. Normalization's mean and variance are
weights and travel as such.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from k2e_core.estimator import compat
from k2e_core.estimator.compat import tf


def _static_size(lookup):
    """The vocabulary size of a lookup layer given its vocabulary as a list, else None."""
    vocabulary = getattr(lookup, "input_vocabulary", None)
    if isinstance(vocabulary, Sequence) and not isinstance(vocabulary, str):
        return len(vocabulary) + compat.token_start_index(lookup)
    return None


class _StaticSize:
    def vocabulary_size(self):
        size = _static_size(self)
        return super().vocabulary_size() if size is None else size


# Registered so that a functional model nested in the model rebuilds them from its config.
@tf.keras.utils.register_keras_serializable(package="k2e")
class StringLookup(_StaticSize, tf.keras.layers.StringLookup):
    pass


@tf.keras.utils.register_keras_serializable(package="k2e")
class IntegerLookup(_StaticSize, tf.keras.layers.IntegerLookup):
    pass


@tf.keras.utils.register_keras_serializable(package="k2e")
class TextVectorization(tf.keras.layers.TextVectorization):
    def __init__(self, *args, vocabulary_size=None, **kwargs):
        # Left out while the inner lookup builds: in a graph it is checked against the
        # table's size, a tensor there. Set once the lookup has its vocabulary.
        super().__init__(*args, **kwargs)
        self._lookup_layer.__class__ = StringLookup
        compat.freeze_vocabulary_size(
            self._lookup_layer, _static_size(self._lookup_layer) or vocabulary_size
        )


_GRAPH_READY = {
    tf.keras.layers.StringLookup: StringLookup,
    tf.keras.layers.IntegerLookup: IntegerLookup,
    tf.keras.layers.TextVectorization: TextVectorization,
}


def clone_layer(layer):
    """A fresh layer from `layer`'s config, with what `adapt` learnt written into it, under
    the same name; a functional or Sequential model inside the model, layer by layer."""
    if isinstance(layer, tf.keras.Model) and (
        compat.is_graph_network(layer) or isinstance(layer, tf.keras.Sequential)
    ):
        return tf.keras.models.clone_model(layer, clone_function=clone_layer)
    config = layer.get_config()
    lookup = getattr(layer, "_lookup_layer", layer)  # TextVectorization wraps a StringLookup
    cls = type(layer)
    if isinstance(lookup, compat.IndexLookup) and cls in _GRAPH_READY:
        if config.get("vocabulary") is None:
            vocabulary = lookup.get_vocabulary(include_special_tokens=False)
            if vocabulary:
                config["vocabulary"] = vocabulary
                if lookup.output_mode == "tf_idf":
                    idf = np.asarray(lookup.idf_weights_const)
                    config["idf_weights"] = idf[compat.token_start_index(lookup) :].tolist()
        cls = _GRAPH_READY[cls]
    if isinstance(layer, compat.Discretization) and config.get("bin_boundaries") is None:
        boundaries = getattr(layer, "bin_boundaries", None)
        if boundaries is not None and len(boundaries):
            config.update(bin_boundaries=[float(b) for b in boundaries], num_bins=None)
    clone = cls.from_config(config)
    if clone.name != layer.name:  # a subclassed model's config may leave its name out
        compat.rename_layer(clone, layer.name)
    return clone


def copy_weights(source, target):
    """Sets `target`'s weights (a clone of `source`) layer by layer: an adapted layer holds
    weights its clone does not have (its lookup table, adapt's running state), which
    `clone_layer` put into the clone's config instead."""
    for src, dst in zip(source.layers, target.layers):
        if (
            isinstance(src, tf.keras.Model)
            and hasattr(dst, "layers")
            and len(src.layers) == len(dst.layers)
        ):
            copy_weights(src, dst)
            continue
        theirs = src.get_weights()
        if len(theirs) == len(dst.weights):
            dst.set_weights(theirs)
        elif not _adapted(dst):
            raise ValueError(
                f"layer {src.name}: {len(theirs)} weights in the model but "
                f"{len(dst.weights)} in its copy"
            )


def _adapted(layer) -> bool:
    lookup = getattr(layer, "_lookup_layer", layer)
    return isinstance(lookup, (compat.IndexLookup, compat.Discretization))
