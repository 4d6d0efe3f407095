"""Keras layers for multi-task learning."""

from mtl_layers.layers.expert_bank import ExpertBank
from mtl_layers.layers.hypergrid_dense import HyperGridDense
from mtl_layers.layers.packed_embedding import PackedEmbedding
from mtl_layers.layers.sequential_expert import SequentialExpert
from mtl_layers.layers.task_embedding import TaskEmbedding
from mtl_layers.layers.task_gate import TaskGate

__all__ = ["ExpertBank", "HyperGridDense", "PackedEmbedding", "SequentialExpert", "TaskEmbedding", "TaskGate"]
