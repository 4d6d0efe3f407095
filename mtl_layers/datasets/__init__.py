"""Data loaders: census data (UCI Adult, Census-Income KDD) and more."""

from mtl_layers.datasets import census, files, glue

__all__ = ["census", "files", "glue"]
