"""Multi-gate Mixture-of-Experts (MMoE) and One-gate Mixture-of-Experts (OMoE) models."""

from typing import Sequence, Union

from mtl_layers.compat import keras
from mtl_layers.layers import ExpertBank, TaskGate
from mtl_layers.models.features import resolve_features
from mtl_layers.models.towers import task_tower
from mtl_layers.tasks import TaskSpec, check_tasks


def mmoe(
    tasks: Sequence[TaskSpec],
    features,
    num_experts: int = 8,
    expert_units: Union[int, Sequence[int]] = 16,
    expert_activation="relu",
    expert_dropout: float = 0.0,
    gate_top_k=None,
    gate_temperature: float = 1.0,
    gate_noise_stddev: float = 0.0,
    load_balance_weight: float = 0.0,
    tower_dropout: float = 0.0,
    model_inputs=None,
    name: str = "mmoe",
):
    """Build a Multi-gate Mixture-of-Experts model with one output per task.

    Ma et al., "Modeling Task Relationships in Multi-task Learning with Multi-gate
    Mixture-of-Experts", KDD 2018: experts f_i shared by all tasks, one softmax gate g_k
    per task, and one tower h_k per task, y_k = h_k(sum_i g_k(x)_i f_i(x)).

    Args:
        tasks: The tasks, as `TaskSpec`s; each gets a gate, a tower and an output named
            after it.
        features: A symbolic Keras tensor of encoded features, or a list of
            `FeatureSpec`s from which named raw inputs and preprocessing are built.
        num_experts: Number of experts.
        expert_units: Hidden sizes of each expert MLP (an int for one layer).
        expert_activation: Activation of the expert layers.
        expert_dropout: Dropout rate after each expert layer.
        gate_top_k: Keep only the k largest gate logits (sparse gating), or None.
        gate_temperature: Divisor of the gate logits.
        gate_noise_stddev: Standard deviation of Gaussian noise on the gate logits in
            training.
        load_balance_weight: Coefficient of each gate's load-balancing loss.
        tower_dropout: Dropout rate after each tower hidden layer.
        model_inputs: The inputs `features` was computed from, when `features` is a
            tensor that is not itself a `keras.Input`.
        name: Model name.

    Returns:
        A functional `keras.Model` whose outputs are a dict keyed by task name, each of
        shape `(batch_size, 1)` (`(batch_size, num_classes)` for multiclass tasks).

    Example:

    >>> import mtl_layers as mtl
    >>> from mtl_layers.compat import keras
    >>> tasks = [mtl.tasks.TaskSpec("a"), mtl.tasks.TaskSpec("b", kind="regression")]
    >>> model = mtl.models.mmoe(tasks, keras.Input((10,)), num_experts=4)
    >>> sorted(model.output_names)
    ['a', 'b']
    """
    tasks = check_tasks(tasks)
    inputs, encoded = resolve_features(features, model_inputs)

    experts = ExpertBank(
        num_experts,
        expert_units,
        activation=expert_activation,
        dropout=expert_dropout,
        name="experts",
    )(encoded)

    outputs = {}
    for task in tasks:
        mixture = TaskGate(
            num_experts,
            top_k=gate_top_k,
            temperature=gate_temperature,
            noise_stddev=gate_noise_stddev,
            load_balance_weight=load_balance_weight,
            name=f"{task.name}_gate",
        )(experts, encoded)
        outputs[task.name] = task_tower(task, mixture, dropout=tower_dropout)
    return keras.Model(inputs=inputs, outputs=outputs, name=name)


def omoe(
    tasks: Sequence[TaskSpec],
    features,
    num_experts: int = 8,
    expert_units: Union[int, Sequence[int]] = 16,
    expert_activation="relu",
    expert_dropout: float = 0.0,
    gate_top_k=None,
    gate_temperature: float = 1.0,
    gate_noise_stddev: float = 0.0,
    load_balance_weight: float = 0.0,
    tower_dropout: float = 0.0,
    model_inputs=None,
    name: str = "omoe",
):
    """Build a One-gate Mixture-of-Experts model: one gate shared by all tasks.

    The OMoE baseline of Ma et al. (KDD 2018): the same experts as MMoE, but a single
    gate g produces one mixture sum_i g(x)_i f_i(x) that every task's tower reads.
    Arguments and outputs are those of `mmoe`.
    """
    tasks = check_tasks(tasks)
    inputs, encoded = resolve_features(features, model_inputs)

    experts = ExpertBank(
        num_experts,
        expert_units,
        activation=expert_activation,
        dropout=expert_dropout,
        name="experts",
    )(encoded)
    mixture = TaskGate(
        num_experts,
        top_k=gate_top_k,
        temperature=gate_temperature,
        noise_stddev=gate_noise_stddev,
        load_balance_weight=load_balance_weight,
        name="shared_gate",
    )(experts, encoded)

    outputs = {task.name: task_tower(task, mixture, dropout=tower_dropout) for task in tasks}
    return keras.Model(inputs=inputs, outputs=outputs, name=name)
