"""Synthetic data sets with known generating parameters, for studies and tests."""

from mtl_layers.datasets.synthetic.mmoe import MmoeRegressionParameters, mmoe_regression

__all__ = ["MmoeRegressionParameters", "mmoe_regression"]
