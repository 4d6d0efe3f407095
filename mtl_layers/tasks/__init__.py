"""Task specifications: what each task predicts and how it is trained and evaluated."""

from mtl_layers.tasks.task_spec import TASK_KINDS, TaskSpec, check_tasks, compile_for_tasks

__all__ = ["TASK_KINDS", "TaskSpec", "check_tasks", "compile_for_tasks"]
