"""Task towers: the per-task MLP and output layer on top of a shared representation."""

from mtl_layers.compat import keras
from mtl_layers.tasks import TaskSpec


def task_tower(task: TaskSpec, shared, dropout: float = 0.0):
    """Apply the tower of `task` to `shared` and return the task's named output.

    The tower is `task.tower_units` Dense layers followed by the output layer, which is
    named after the task and computed in float32 under mixed precision.
    """
    hidden = shared
    for depth, units in enumerate(task.tower_units):
        hidden = keras.layers.Dense(
            units, activation=task.tower_activation, name=f"{task.name}_tower_{depth}"
        )(hidden)
        if dropout > 0:
            hidden = keras.layers.Dropout(dropout, name=f"{task.name}_tower_dropout_{depth}")(
                hidden
            )
    return keras.layers.Dense(
        task.output_units,
        activation=task.output_activation,
        dtype="float32",
        name=task.name,
    )(hidden)
