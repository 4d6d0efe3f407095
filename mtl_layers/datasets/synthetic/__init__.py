"""Synthetic data sets with known generating parameters, for studies and tests."""

from mtl_layers.datasets.synthetic.mmoe import MmoeRegressionParameters, mmoe_regression
from mtl_layers.datasets.synthetic.sequential import (
    SequentialRegressionParameters,
    sequential_regression,
)

__all__ = [
    "MmoeRegressionParameters",
    "SequentialRegressionParameters",
    "mmoe_regression",
    "sequential_regression",
]
