"""Data loaders: census data (UCI Adult, Census-Income KDD) and more."""

from mtl_layers.datasets import batching, census, files, glue
from mtl_layers.datasets import synthetic
from mtl_layers.datasets import tfds  # Registers the TFDS builders.

__all__ = ["batching", "census", "files", "glue", "synthetic", "tfds"]
