"""TaskSpec: one prediction task of a multi-task model, with its loss and metrics."""

import dataclasses
import numbers
import re
from typing import Optional, Sequence, Tuple

from absl import logging

from mtl_layers.compat import IS_KERAS_2, backend_name, keras

TASK_KINDS = ("binary", "regression", "multiclass")

# TensorFlow signature keys and Keras output names must be valid identifiers of this form.
_NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """Description of one task: its name, kind, tower and loss weight.

    The task owns its output layer, loss and metrics, so a model builder needs only the
    list of tasks. The model's output for the task is named `name`.

    Args:
        name: Output name, a letter followed by letters, digits or underscores. It names
            the model output, the label key, the loss in the training logs and the output
            of the exported serving signature.
        kind: `"binary"` (sigmoid output, binary cross-entropy, AUC), `"regression"`
            (linear output, mean squared error, RMSE) or `"multiclass"` (softmax over
            `num_classes`, sparse categorical cross-entropy, accuracy).
        num_classes: Number of classes, required for `"multiclass"` (>= 2) and unused
            otherwise.
        tower_units: Hidden sizes of the task's tower MLP, possibly empty.
        loss_weight: Weight (> 0) of the task's loss in the total loss.
        tower_activation: Activation of the tower's hidden layers.

    Example:

    >>> TaskSpec("income", kind="binary", tower_units=(8,)).output_units
    1
    """

    name: str
    kind: str = "binary"
    num_classes: Optional[int] = None
    tower_units: Tuple[int, ...] = (8,)
    loss_weight: float = 1.0
    tower_activation: str = "relu"

    def __post_init__(self):
        if not isinstance(self.name, str) or not _NAME_PATTERN.match(self.name):
            raise ValueError(
                "`name` must start with a letter and contain only letters, digits and "
                f"underscores, because it names a model output. Received: name={self.name!r}"
            )
        if self.kind not in TASK_KINDS:
            raise ValueError(f"`kind` must be one of {TASK_KINDS}. Received: kind={self.kind!r}")
        if self.kind == "multiclass":
            if (
                isinstance(self.num_classes, bool)
                or not isinstance(self.num_classes, numbers.Integral)
                or self.num_classes < 2
            ):
                raise ValueError(
                    "`num_classes` must be an integer >= 2 for a multiclass task. "
                    f"Received: num_classes={self.num_classes!r} for task {self.name!r}"
                )
        tower_units = tuple(self.tower_units)
        for size in tower_units:
            if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
                raise ValueError(
                    "Every entry of `tower_units` must be an integer >= 1. "
                    f"Received: tower_units={self.tower_units!r} for task {self.name!r}"
                )
        object.__setattr__(self, "tower_units", tower_units)
        if (
            isinstance(self.loss_weight, bool)
            or not isinstance(self.loss_weight, numbers.Real)
            or not 0 < self.loss_weight < float("inf")
        ):
            raise ValueError(
                "`loss_weight` must be a finite number > 0. "
                f"Received: loss_weight={self.loss_weight!r} for task {self.name!r}"
            )

    @property
    def output_units(self) -> int:
        """Width of the task's output: 1, or `num_classes` for multiclass tasks."""
        return self.num_classes if self.kind == "multiclass" else 1

    @property
    def output_activation(self) -> Optional[str]:
        """Activation of the output layer."""
        return {"binary": "sigmoid", "regression": None, "multiclass": "softmax"}[self.kind]

    def loss(self):
        """Return a new Keras loss object for the task."""
        if self.kind == "binary":
            return keras.losses.BinaryCrossentropy(name=f"{self.name}_loss")
        if self.kind == "regression":
            return keras.losses.MeanSquaredError(name=f"{self.name}_loss")
        return keras.losses.SparseCategoricalCrossentropy(name=f"{self.name}_loss")

    def metrics(self) -> list:
        """Return new Keras metric objects for the task."""
        if self.kind == "binary":
            return [keras.metrics.AUC(name="auc")]
        if self.kind == "regression":
            return [keras.metrics.RootMeanSquaredError(name="rmse")]
        return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]


def check_tasks(tasks: Sequence[TaskSpec]) -> Tuple[TaskSpec, ...]:
    """Return `tasks` as a tuple, or raise ValueError if it is empty or names repeat."""
    tasks = tuple(tasks)
    if not tasks:
        raise ValueError("`tasks` must contain at least one TaskSpec. Received: tasks=()")
    for task in tasks:
        if not isinstance(task, TaskSpec):
            raise ValueError(
                f"Every entry of `tasks` must be a TaskSpec. Received: {task!r} of type "
                f"{type(task).__name__}"
            )
    names = [task.name for task in tasks]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"Task names must be unique. Received duplicates: {duplicates}")
    return tasks


def compile_for_tasks(
    model, tasks: Sequence[TaskSpec], optimizer="adam", track_metrics: bool = True, **compile_kwargs
):
    """Compile `model` with each task's loss, loss weight and metrics.

    The model must have one output per task, named after the task (as the builders in
    `mtl_layers.models` create). Extra keyword arguments go to `model.compile`.

    The task metrics are compiled as `weighted_metrics`: `sample_weight` in `fit` and
    `evaluate` weights them as it weights the losses. Without sample weights they are the
    plain metrics. Their names in the logs are the same either way, such as `income_auc`.

    Args:
        model: The multi-task model.
        tasks: The model's `TaskSpec`s.
        optimizer: The optimizer or its name.
        track_metrics: Whether `fit` updates each task's metrics at every step. With
            `False` only the losses are computed, which shortens the step of a small
            model; evaluate the metrics after training instead.
        **compile_kwargs: Passed to `model.compile`, for example `steps_per_execution`.
    """
    tasks = check_tasks(tasks)
    output_names = list(model.output_names)
    missing = [task.name for task in tasks if task.name not in output_names]
    if missing:
        raise ValueError(
            f"The model has no output named {missing}. Received: model outputs {output_names}. "
            "Name each task's output layer after the task."
        )
    _check_strategy_scope(model)
    model.compile(
        optimizer=optimizer,
        loss={task.name: task.loss() for task in tasks},
        loss_weights={task.name: float(task.loss_weight) for task in tasks},
        # As weighted metrics, the task metrics use the sample weights that the losses use,
        # for example the per-step weights that exclude padded steps of a sequence.
        weighted_metrics={task.name: task.metrics() for task in tasks} if track_metrics else None,
        **compile_kwargs,
    )
    if IS_KERAS_2:
        # Each step of a compiled tf_keras model logs metrics already reduced over all
        # replicas. The tf_keras 2.21 default, "auto", adds up the workers' values under
        # MultiWorkerMirroredStrategy, which multiplies the per-batch logs that callbacks
        # receive by the worker count. `fit` reads the epoch logs from the metrics.
        model.distribute_reduction_method = "first"
    return model


def _check_strategy_scope(model) -> None:
    """Check `model` against the distribution strategy in scope, if there is one.

    Raises when the scope did not create the model's weights: Keras 3 then fails later,
    inside `fit`, with an AssertionError without a message. Warns in Keras 3 mode when
    `fit` will fail for the model under the strategy (`keras_3_strategy_problem`).
    """
    if backend_name() != "tensorflow":
        return
    import tensorflow as tf

    if not tf.distribute.has_strategy():
        return
    strategy = tf.distribute.get_strategy()
    if model.weights:
        weight = model.weights[0]
        # A Keras 3 variable wraps the TensorFlow variable in `.value`; tf_keras weights
        # are TensorFlow variables.
        variable = weight if isinstance(weight, tf.Variable) else getattr(weight, "value", weight)
        if not strategy.extended.variable_created_in_scope(variable):
            raise ValueError(
                "`compile_for_tasks` runs inside the scope of a distribution strategy "
                f"({type(strategy).__name__}), but the model's weights were created outside "
                f"it. Received: weight {getattr(weight, 'path', weight.name)!r} created outside "
                "the scope. Build the model inside `with strategy.scope():` and compile it "
                "there too."
            )
    if not IS_KERAS_2:
        # A warning, not an error: the failure is Keras's, and a Keras release may fix it.
        problem = keras_3_strategy_problem(strategy, model)
        if problem is not None:
            logging.warning(problem)


def keras_3_strategy_problem(strategy, model) -> Optional[str]:
    """Return why Keras 3's `fit` will fail for `model` under `strategy`, or None.

    Keras 3 (checked with 3.15) averages the first input batch across replicas before it
    builds the model. TensorFlow cannot average bool or string tensors, and under
    MultiWorkerMirroredStrategy the step fails for every input. Keras 2 mode has no such
    step.
    """
    import tensorflow as tf

    keras_2_mode = "Keras 2 mode (TF_USE_LEGACY_KERAS=1), where it trains"
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return (
            "Keras 3 cannot train under MultiWorkerMirroredStrategy: `fit` fails with "
            f"\"Attempt to convert a value (PerReplica...) to a Tensor\". Run in {keras_2_mode}."
        )
    if strategy.num_replicas_in_sync < 2:
        return None
    dtypes = {id(tensor): tf.as_dtype(tensor.dtype).name for tensor in model.inputs}
    inputs = [tensor for tensor in model.inputs if dtypes[id(tensor)] in ("bool", "string")]
    if not inputs:
        return None
    names = ", ".join(f"{tensor.name} ({dtypes[id(tensor)]})" for tensor in inputs)
    return (
        f"Keras 3 cannot train this model on {strategy.num_replicas_in_sync} replicas: it "
        "averages the first batch across replicas, which fails for bool and string inputs "
        f"(\"Value for attr 'T' of ...\"). Received: inputs {names}. Encode them as numbers "
        f"in the input pipeline, or run in {keras_2_mode}."
    )
