"""Progressive Layered Extraction (PLE) and its single-level form, CGC."""

from typing import Sequence, Union

from mtl_layers.compat import keras
from mtl_layers.layers import ExpertBank, TaskGate, _validation
from mtl_layers.models.features import resolve_features
from mtl_layers.models.towers import task_tower
from mtl_layers.tasks import TaskSpec, check_tasks


def ple(
    tasks: Sequence[TaskSpec],
    features,
    num_levels: int = 2,
    num_task_experts: int = 2,
    num_shared_experts: int = 2,
    expert_units: Union[int, Sequence[int]] = 16,
    expert_activation="relu",
    expert_dropout: float = 0.0,
    tower_dropout: float = 0.0,
    model_inputs=None,
    name: str = "ple",
):
    """Build a Progressive Layered Extraction model from ExpertBank and TaskGate.

    Tang et al., "Progressive Layered Extraction (PLE): A Novel Multi-Task Learning
    (MTL) Model for Personalized Recommendations", RecSys 2020. Each level is a
    Customized Gate Control (CGC) unit: every task k has its own experts E_k, all tasks
    share experts E_s, and task k's gate mixes [E_k, E_s]:

        y_k = g_k(x_k) . [E_k(x_k), E_s(x_s)]

    Below the last level a shared gate mixes all experts [E_1, ..., E_K, E_s] into the
    shared input x_s of the next level. With `num_levels=1` the model is CGC.

    Args:
        tasks: The tasks, as `TaskSpec`s.
        features: A symbolic Keras tensor of encoded features, or a list of `FeatureSpec`s.
        num_levels: Number of extraction levels (>= 1).
        num_task_experts: Experts per task at each level (>= 1).
        num_shared_experts: Shared experts at each level (>= 1).
        expert_units: Hidden sizes of each expert MLP.
        expert_activation: Activation of the expert layers.
        expert_dropout: Dropout rate after each expert layer.
        tower_dropout: Dropout rate after each tower hidden layer.
        model_inputs: The inputs `features` was computed from, when `features` is a
            tensor that is not itself a `keras.Input`.
        name: Model name.

    Returns:
        A functional `keras.Model` with one output per task, keyed by task name.
    """
    tasks = check_tasks(tasks)
    num_levels = _validation.check_positive_int("num_levels", num_levels)
    num_task_experts = _validation.check_positive_int("num_task_experts", num_task_experts)
    num_shared_experts = _validation.check_positive_int("num_shared_experts", num_shared_experts)
    inputs, encoded = resolve_features(features, model_inputs)

    def expert_bank(count, level, owner):
        return ExpertBank(
            count,
            expert_units,
            activation=expert_activation,
            dropout=expert_dropout,
            name=f"{owner}_experts_{level}",
        )

    task_inputs = {task.name: encoded for task in tasks}
    shared_input = encoded
    for level in range(num_levels):
        task_experts = {
            task.name: expert_bank(num_task_experts, level, task.name)(task_inputs[task.name])
            for task in tasks
        }
        shared_experts = expert_bank(num_shared_experts, level, "shared")(shared_input)

        # Task k's gate mixes its own experts and the shared experts (the expert axis is -2).
        next_task_inputs = {}
        for task in tasks:
            candidates = keras.layers.Concatenate(axis=-2, name=f"{task.name}_candidates_{level}")(
                [task_experts[task.name], shared_experts]
            )
            next_task_inputs[task.name] = TaskGate(
                num_task_experts + num_shared_experts, name=f"{task.name}_gate_{level}"
            )(candidates, task_inputs[task.name])

        # Below the last level the shared gate mixes every expert into the next shared input.
        if level < num_levels - 1:
            all_experts = keras.layers.Concatenate(axis=-2, name=f"all_experts_{level}")(
                [task_experts[task.name] for task in tasks] + [shared_experts]
            )
            shared_input = TaskGate(
                len(tasks) * num_task_experts + num_shared_experts, name=f"shared_gate_{level}"
            )(all_experts, shared_input)
        task_inputs = next_task_inputs

    outputs = {
        task.name: task_tower(task, task_inputs[task.name], dropout=tower_dropout) for task in tasks
    }
    return keras.Model(inputs=inputs, outputs=outputs, name=name)
