"""Mixture of Sequential Experts (MoSE) and its multi-task baselines on sequences.

Qin et al., "Multitask Mixture of Sequential Experts for User Activity Streams", KDD 2020:
a shared-bottom LSTM reads the activity sequence, sequential experts (LSTMs) read the
bottom's output, one gate per task mixes the experts at every time step, and one tower per
task predicts from the mixture.

`mose_baseline` builds the alternatives on equal terms (same inputs, masking, towers and
output steps), each in a sequential form (LSTM layers) and a pooled form (feed-forward
layers over each step's features and the mean of the features so far):

- `"multi_model"`: one separate bottom and tower per task, no sharing.
- `"shared_bottom"`: one shared bottom, one tower per task.
- `"multi_head"`: one shared bottom, then one head per task (an LSTM of `expert_units`,
  or a Dense layer in the pooled form) before the task's tower.
- `"mmoe"`: one shared bottom, feed-forward experts (`ExpertBank`) at every step and one
  gate per task at every step. In the pooled form this is MMoE on pooled features.
"""

import numbers
from typing import Optional, Sequence

import numpy as np

from mtl_layers.compat import is_input_tensor, is_keras_tensor, keras
from mtl_layers.layers import ExpertBank, SequentialExpert, TaskGate, _validation
from mtl_layers.models.mose_layers import (
    CausalMeanPooling,
    ClearMask,
    LastValidStep,
    ZeroPaddedSteps,
)
from mtl_layers.models.towers import task_tower
from mtl_layers.tasks import TaskSpec, check_tasks

ARCHITECTURES = ("multi_model", "shared_bottom", "multi_head", "mmoe")
OUTPUT_STEPS = ("all", "last")


def _sequence_inputs(sequence_features, mask, model_inputs):
    """Return `(model_inputs, sequence, mask)` from a feature count or symbolic tensors."""
    if isinstance(sequence_features, numbers.Integral) and not isinstance(
        sequence_features, bool
    ):
        num_features = _validation.check_positive_int("sequence_features", sequence_features)
        if mask is not None or model_inputs is not None:
            raise ValueError(
                "`mask` and `model_inputs` apply only when `sequence_features` is a tensor. "
                f"Received: sequence_features={num_features}, mask={mask!r}."
            )
        sequence = keras.Input((None, num_features), name="sequence")
        mask = keras.Input((None,), dtype="bool", name="mask")
        return {"sequence": sequence, "mask": mask}, _zero_padded(sequence, mask), mask
    if not is_keras_tensor(sequence_features) or len(sequence_features.shape) != 3:
        raise ValueError(
            "`sequence_features` must be the number of features per step, or a symbolic "
            "Keras tensor of shape (batch_size, time, features). Received: "
            f"sequence_features={sequence_features!r}"
        )
    if sequence_features.shape[-1] is None:
        raise ValueError(
            "The last axis (features) of `sequence_features` must be known. Received: "
            f"shape={tuple(sequence_features.shape)}"
        )
    if mask is not None and (not is_keras_tensor(mask) or len(mask.shape) != 2):
        raise ValueError(
            "`mask` must be a symbolic Keras tensor of shape (batch_size, time), True at "
            f"valid steps, or None. Received: mask={mask!r}"
        )
    if model_inputs is None:
        computed = [
            tensor
            for tensor in (sequence_features, mask)
            if tensor is not None and not is_input_tensor(tensor)
        ]
        if computed:
            raise ValueError(
                "`model_inputs` must be given when `sequence_features` or `mask` is computed "
                "by layers from other inputs; otherwise the model would start at the computed "
                "tensor and leave those layers out. Pass the `keras.Input` tensors, for "
                "example model_inputs={'movie_id': movie_id, 'mask': mask}. Received: "
                f"model_inputs=None with computed tensors {computed!r}"
            )
        model_inputs = [sequence_features] if mask is None else [sequence_features, mask]
    return model_inputs, _zero_padded(sequence_features, mask), mask


def _zero_padded(sequence, mask):
    """Zero the padded steps of `sequence`, so that NaN there reaches no gradient."""
    if mask is None:
        return sequence
    return ZeroPaddedSteps(name="zero_padded_steps")(sequence, mask=mask)


def _check_output_steps(output_steps):
    if output_steps not in OUTPUT_STEPS:
        raise ValueError(
            f"`output_steps` must be one of {OUTPUT_STEPS}. Received: output_steps={output_steps!r}"
        )


def _check_task_names(tasks, inputs):
    """Raise ValueError if a task is named like a model input.

    Each task's output layer is named after the task, and Keras requires unique layer
    names, so such a model cannot be built.
    """
    tensors = inputs.values() if isinstance(inputs, dict) else inputs
    input_names = {tensor.name.split(":")[0] for tensor in tensors}
    for task in tasks:
        if task.name in input_names:
            raise ValueError(
                f"Task name {task.name!r} is also the name of a model input. Each task's "
                "output layer is named after the task, and layer names must be unique, so "
                f"rename the task, for example TaskSpec({task.name + '_label'!r}, ...). "
                f"Received: task names {[task.name for task in tasks]}, input names "
                f"{sorted(input_names)}."
            )


def _build_model(inputs, outputs, name):
    """Return the functional model, with a hint to rename a task when layer names repeat."""
    try:
        return keras.Model(inputs=inputs, outputs=outputs, name=name)
    except ValueError as error:
        if "is used" not in str(error) or "times in the model" not in str(error):
            raise
        raise ValueError(
            f"{error} Layers created for a task are named after it (the output layer "
            "`<task>`, `<task>_gate`, `<task>_tower_0`, ...), so a task named like another "
            "layer of the model must be renamed."
        ) from error


def _outputs(tasks, representations, mask, output_steps, tower_dropout):
    """Apply each task's tower to its `(batch, time, features)` representation."""
    outputs = {}
    for task in tasks:
        representation = ClearMask(name=f"{task.name}_clear_mask")(representations[task.name])
        if output_steps == "last":
            representation = LastValidStep(name=f"{task.name}_last_step")(
                representation, mask=mask
            )
        outputs[task.name] = task_tower(task, representation, dropout=tower_dropout)
    return outputs


def _bottom(sequence, mask, units, sequential, dropout, name):
    """A shared bottom: an LSTM, or a Dense layer over pooled features."""
    if sequential:
        return keras.layers.LSTM(units, return_sequences=True, dropout=dropout, name=name)(
            sequence, mask=mask
        )
    pooled = CausalMeanPooling(name=f"{name}_pooling")(sequence, mask=mask)
    hidden = keras.layers.Dense(units, activation="relu", name=name)(pooled)
    if dropout > 0:
        hidden = keras.layers.Dropout(dropout, name=f"{name}_dropout")(hidden)
    return hidden


def mose(
    tasks: Sequence[TaskSpec],
    sequence_features,
    mask=None,
    num_experts: int = 4,
    expert_units: int = 16,
    bottom_units: int = 32,
    expert_dropout: float = 0.0,
    expert_recurrent_dropout: float = 0.0,
    gate_top_k: Optional[int] = None,
    gate_temperature: float = 1.0,
    load_balance_weight: float = 0.0,
    tower_dropout: float = 0.0,
    output_steps: str = "all",
    model_inputs=None,
    name: str = "mose",
):
    """Build a Mixture of Sequential Experts model with one output per task.

    Shared-bottom LSTM -> `SequentialExpert` (LSTM experts) -> one `TaskGate` per task at
    every time step, reading the bottom's output at that step -> one tower per task.

    Args:
        tasks: The tasks, as `TaskSpec`s; each gets a gate, a tower and an output named
            after it, so no task may be named like a model input (`"sequence"` and
            `"mask"` when `sequence_features` is a number).
        sequence_features: The number of features per step, which creates the inputs
            `"sequence"` `(batch_size, time, features)` float32 and `"mask"`
            `(batch_size, time)` bool; or a symbolic Keras tensor of encoded features
            `(batch_size, time, features)`.
        mask: With a tensor `sequence_features`, a symbolic `(batch_size, time)` tensor that
            is True at valid steps, or None when every step is valid.
        num_experts: Number of sequential experts.
        expert_units: State size of each expert LSTM.
        bottom_units: State size of the shared-bottom LSTM.
        expert_dropout: Input dropout of the experts.
        expert_recurrent_dropout: Recurrent dropout of the experts.
        gate_top_k: Keep only the k largest gate logits per step, or None.
        gate_temperature: Divisor of the gate logits.
        load_balance_weight: Coefficient of each gate's load-balancing loss.
        tower_dropout: Dropout rate after each tower hidden layer, in [0, 1).
        output_steps: `"all"` for one prediction per step `(batch_size, time, units)`, or
            `"last"` for the prediction at each row's last valid step `(batch_size, units)`.
        model_inputs: The inputs `sequence_features` and `mask` were computed from, when
            they are not themselves `keras.Input`s.
        name: Model name.

    Returns:
        A functional `keras.Model` whose outputs are a dict keyed by task name. With
        `output_steps="all"` the outputs at padded steps are not meaningful; train with
        the mask as per-step sample weights (see `sequence_sample_weights`).

    Example:

    >>> import mtl_layers as mtl
    >>> tasks = [mtl.tasks.TaskSpec("click"), mtl.tasks.TaskSpec("time", kind="regression")]
    >>> model = mtl.models.mose(tasks, sequence_features=6, num_experts=3)
    >>> sorted(model.output_names)
    ['click', 'time']
    """
    tasks = check_tasks(tasks)
    _check_output_steps(output_steps)
    tower_dropout = _validation.check_rate("tower_dropout", tower_dropout)
    inputs, sequence, mask = _sequence_inputs(sequence_features, mask, model_inputs)
    _check_task_names(tasks, inputs)
    bottom_units = _validation.check_positive_int("bottom_units", bottom_units)

    bottom = _bottom(sequence, mask, bottom_units, True, 0.0, "bottom_lstm")
    experts = SequentialExpert(
        num_experts,
        expert_units,
        dropout=expert_dropout,
        recurrent_dropout=expert_recurrent_dropout,
        name="sequential_experts",
    )(bottom, mask=mask)
    experts = ClearMask(name="experts_clear_mask")(experts)
    gate_inputs = ClearMask(name="gate_inputs_clear_mask")(bottom)

    representations = {}
    for task in tasks:
        # f_k(x)_t = sum_i g_k(b_t)_i e_i(x)_t: a gate per task and time step.
        representations[task.name] = TaskGate(
            num_experts,
            top_k=gate_top_k,
            temperature=gate_temperature,
            load_balance_weight=load_balance_weight,
            name=f"{task.name}_gate",
        )(experts, gate_inputs)
    outputs = _outputs(tasks, representations, mask, output_steps, tower_dropout)
    return _build_model(inputs, outputs, name)


def mose_baseline(
    tasks: Sequence[TaskSpec],
    sequence_features,
    architecture: str,
    sequential: bool = True,
    mask=None,
    num_experts: int = 4,
    expert_units: int = 16,
    bottom_units: int = 32,
    bottom_dropout: float = 0.0,
    tower_dropout: float = 0.0,
    output_steps: str = "all",
    model_inputs=None,
    name: Optional[str] = None,
):
    """Build one of the baselines that MoSE is compared with, on the same inputs.

    Args:
        tasks: The tasks, as `TaskSpec`s. As in `mose`, no task may be named like a
            model input.
        sequence_features: As in `mose`.
        architecture: `"multi_model"` (a separate bottom and tower per task),
            `"shared_bottom"` (one shared bottom, a tower per task), `"multi_head"` (a
            shared bottom, then a head per task before its tower) or `"mmoe"` (a shared
            bottom, feed-forward experts and a gate per task at every step).
        sequential: True for LSTM bottoms and heads, False for feed-forward layers over
            each step's features and the mean of the features so far.
        mask: As in `mose`.
        num_experts: Number of feed-forward experts of `"mmoe"`.
        expert_units: Size of each expert of `"mmoe"` and of each head of `"multi_head"`.
        bottom_units: Size of the bottom (each task's bottom for `"multi_model"`).
        bottom_dropout: Dropout on the bottom's inputs (LSTM) or outputs (Dense).
        tower_dropout: Dropout rate after each tower hidden layer, in [0, 1).
        output_steps: As in `mose`.
        model_inputs: As in `mose`.
        name: Model name; defaults to the architecture, with `"pooled_"` in front when
            `sequential=False`.

    Returns:
        A functional `keras.Model` with the outputs of `mose`.
    """
    tasks = check_tasks(tasks)
    if architecture not in ARCHITECTURES:
        raise ValueError(
            f"`architecture` must be one of {ARCHITECTURES}. Received: architecture={architecture!r}"
        )
    _check_output_steps(output_steps)
    bottom_units = _validation.check_positive_int("bottom_units", bottom_units)
    expert_units = _validation.check_positive_int("expert_units", expert_units)
    bottom_dropout = _validation.check_rate("bottom_dropout", bottom_dropout)
    tower_dropout = _validation.check_rate("tower_dropout", tower_dropout)
    sequential = _validation.check_bool("sequential", sequential)
    inputs, sequence, mask = _sequence_inputs(sequence_features, mask, model_inputs)
    _check_task_names(tasks, inputs)
    if name is None:
        name = architecture if sequential else f"pooled_{architecture}"

    representations = {}
    if architecture == "multi_model":
        for task in tasks:
            representations[task.name] = _bottom(
                sequence, mask, bottom_units, sequential, bottom_dropout, f"{task.name}_bottom"
            )
        outputs = _outputs(tasks, representations, mask, output_steps, tower_dropout)
        return _build_model(inputs, outputs, name)

    bottom = _bottom(sequence, mask, bottom_units, sequential, bottom_dropout, "bottom")
    if architecture == "shared_bottom":
        representations = {task.name: bottom for task in tasks}
    elif architecture == "multi_head":
        for task in tasks:
            if sequential:
                head = keras.layers.LSTM(
                    expert_units, return_sequences=True, name=f"{task.name}_head"
                )(bottom, mask=mask)
            else:
                head = keras.layers.Dense(
                    expert_units, activation="relu", name=f"{task.name}_head"
                )(bottom)
            representations[task.name] = head
    else:
        gate_inputs = ClearMask(name="bottom_clear_mask")(bottom)
        experts = ExpertBank(num_experts, expert_units, name="experts")(gate_inputs)
        for task in tasks:
            representations[task.name] = TaskGate(num_experts, name=f"{task.name}_gate")(
                experts, gate_inputs
            )
    outputs = _outputs(tasks, representations, mask, output_steps, tower_dropout)
    return _build_model(inputs, outputs, name)


def sequence_sample_weights(tasks: Sequence[TaskSpec], mask):
    """Return `{task name: mask as float32}`, per-step sample weights for `fit`.

    With `output_steps="all"` each task's loss must ignore padded steps; pass this dict as
    `sample_weight` (Keras 3 and `tf_keras` both accept `(batch_size, time)` weights for
    `(batch_size, time, 1)` outputs).

    Raises:
        ValueError: `mask` does not have shape `(batch_size, time)`.
    """
    tasks = check_tasks(tasks)
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(
            "`mask` must have shape (batch_size, time), True at valid steps. Received: mask "
            f"of shape {mask.shape}. Drop the extra axes, for example mask[..., 0] for a "
            "(batch_size, time, 1) mask."
        )
    weights = mask.astype("float32")
    return {task.name: weights for task in tasks}
