"""Keras layers for multi-task learning."""

from mtl_layers.layers.expert_bank import ExpertBank
from mtl_layers.layers.sequential_expert import SequentialExpert
from mtl_layers.layers.task_gate import TaskGate

__all__ = ["ExpertBank", "SequentialExpert", "TaskGate"]
