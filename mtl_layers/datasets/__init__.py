"""Data loaders: census data (UCI Adult, Census-Income KDD) and more."""

from mtl_layers.datasets import census, files, glue
from mtl_layers.datasets import synthetic
from mtl_layers.datasets import tfds  # Registers the TFDS builders.

__all__ = ["census", "files", "glue", "synthetic", "tfds"]
