"""Shared-Bottom multi-task model: one shared MLP, one tower per task."""

from typing import Sequence

from mtl_layers.compat import keras
from mtl_layers.layers import _validation
from mtl_layers.models.features import resolve_features
from mtl_layers.models.towers import task_tower
from mtl_layers.tasks import TaskSpec, check_tasks


def shared_bottom(
    tasks: Sequence[TaskSpec],
    features,
    bottom_units: Sequence[int] = (128,),
    bottom_activation="relu",
    bottom_dropout: float = 0.0,
    tower_dropout: float = 0.0,
    model_inputs=None,
    name: str = "shared_bottom",
):
    """Build a Shared-Bottom model, the hard-parameter-sharing baseline of MMoE.

    Ma et al. (KDD 2018), Sec. 4.1: a bottom network f shared by all tasks and a tower
    h_k per task, y_k = h_k(f(x)).

    Args:
        tasks: The tasks, as `TaskSpec`s.
        features: A symbolic Keras tensor of encoded features, or a list of `FeatureSpec`s.
        bottom_units: Hidden sizes of the shared bottom MLP (an int for one layer).
        bottom_activation: Activation of the bottom layers.
        bottom_dropout: Dropout rate after each bottom layer.
        tower_dropout: Dropout rate after each tower hidden layer.
        model_inputs: The inputs `features` was computed from, when `features` is a
            tensor that is not itself a `keras.Input`.
        name: Model name.

    Returns:
        A functional `keras.Model` with one output per task, keyed by task name.
    """
    tasks = check_tasks(tasks)
    bottom_units = _validation.check_units("bottom_units", bottom_units)
    bottom_dropout = _validation.check_rate("bottom_dropout", bottom_dropout)
    inputs, encoded = resolve_features(features, model_inputs)

    hidden = encoded
    for depth, units in enumerate(bottom_units):
        hidden = keras.layers.Dense(units, activation=bottom_activation, name=f"bottom_{depth}")(
            hidden
        )
        if bottom_dropout > 0:
            hidden = keras.layers.Dropout(bottom_dropout, name=f"bottom_dropout_{depth}")(hidden)

    outputs = {task.name: task_tower(task, hidden, dropout=tower_dropout) for task in tasks}
    return keras.Model(inputs=inputs, outputs=outputs, name=name)
