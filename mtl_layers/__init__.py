"""mtl_layers: Keras layers and models for multi-task learning.

Layers: `ExpertBank` and `TaskGate` (Multi-gate Mixture-of-Experts). Model builders live
in `mtl_layers.models`, data loaders in `mtl_layers.datasets`, TF Serving export in
`mtl_layers.export`.
"""

from mtl_layers import compat
from mtl_layers.layers import (
    ExpertBank,
    HyperGridDense,
    PackedEmbedding,
    SequentialExpert,
    TaskEmbedding,
    TaskGate,
)
from mtl_layers import callbacks, datasets, evaluation, export, models, tasks

__version__ = "0.1.0"

__all__ = [
    "ExpertBank",
    "HyperGridDense",
    "PackedEmbedding",
    "SequentialExpert",
    "TaskEmbedding",
    "TaskGate",
    "callbacks",
    "compat",
    "datasets",
    "evaluation",
    "export",
    "models",
    "tasks",
    "__version__",
]
