"""Multi-task TensorFlow Recommenders models built on the library's architectures.

TensorFlow Recommenders 0.7 runs only on Keras 2, so `MultiTaskModel`, `RetrievalSpec`
and `UncertaintyWeighting` need `TF_USE_LEGACY_KERAS=1` in the environment before
TensorFlow is imported. In Keras 3 mode, accessing them raises ImportError with that
instruction. `movielens_data` (the MovieLens 100K loader) works in both modes.
"""

import importlib

from mtl_layers.tfrs import movielens_data

_MODEL_NAMES = ("ARCHITECTURES", "KERAS_3_MESSAGE", "MultiTaskModel", "RetrievalSpec")

__all__ = list(_MODEL_NAMES) + ["UncertaintyWeighting", "movielens_data"]


def __getattr__(name):
    # Imported on first use, so that the data loader stays usable in Keras 3 mode.
    if name in _MODEL_NAMES:
        return getattr(importlib.import_module("mtl_layers.tfrs.model"), name)
    if name == "UncertaintyWeighting":
        importlib.import_module("mtl_layers.tfrs.model")  # Raises the Keras 3 message.
        return importlib.import_module("mtl_layers.tfrs.uncertainty").UncertaintyWeighting
    raise AttributeError(f"module 'mtl_layers.tfrs' has no attribute {name!r}")
