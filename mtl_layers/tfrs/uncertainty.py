"""Uncertainty-based loss weighting with learnable per-task weights.

Kendall, Gal and Cipolla, "Multi-Task Learning Using Uncertainty to Weigh Losses for
Scene Geometry and Semantics", CVPR 2018, Eq. 7 and 10. Each task k learns
s_k = log(sigma_k^2) and its loss L_k is replaced by

    regression:      0.5 * exp(-s_k) * L_k + 0.5 * s_k
    classification:        exp(-s_k) * L_k + 0.5 * s_k

so a task with noisier labels (larger sigma_k) gets a smaller weight, and the s_k term
keeps sigma_k from growing without bound. Learning log-variances instead of sigma_k
keeps the weights positive and the optimisation stable.
"""

from typing import Dict, Mapping, Sequence

from mtl_layers.compat import keras, ops, register_serializable


@register_serializable
class UncertaintyWeighting(keras.layers.Layer):
    """Weighting of task losses by learned homoscedastic uncertainty.

    Args:
        task_names: Names of the weighted tasks, the keys of the losses passed to `call`.
        regression_tasks: The names among `task_names` whose loss is a regression loss
            (Gaussian likelihood, factor 0.5). The others use the classification form.

    Call arguments:
        losses: A dict of scalar losses keyed by task name.

    Returns:
        A dict of the weighted loss terms keyed by task name; their sum is the total loss.
    """

    def __init__(self, task_names: Sequence[str], regression_tasks: Sequence[str] = (), **kwargs):
        super().__init__(**kwargs)
        self.task_names = tuple(task_names)
        self.regression_tasks = tuple(regression_tasks)
        if not self.task_names or len(set(self.task_names)) != len(self.task_names):
            raise ValueError(
                f"`task_names` must be non-empty and unique. Received: task_names={self.task_names}"
            )
        unknown = sorted(set(self.regression_tasks) - set(self.task_names))
        if unknown:
            raise ValueError(
                f"`regression_tasks` names tasks that are not in `task_names`: {unknown}. "
                f"Received: task_names={self.task_names}"
            )

    def build(self, input_shape=None):
        self.log_variances = self.add_weight(
            name="log_variances",
            shape=(len(self.task_names),),
            initializer="zeros",
            trainable=True,
        )
        super().build(input_shape)

    def call(self, losses: Mapping[str, "keras.KerasTensor"]) -> Dict[str, "keras.KerasTensor"]:
        missing = [name for name in self.task_names if name not in losses]
        if missing:
            raise ValueError(f"No loss for the tasks {missing}. Received losses for {sorted(losses)}")
        terms = {}
        for index, name in enumerate(self.task_names):
            log_variance = self.log_variances[index]
            precision = ops.exp(-log_variance)
            scale = 0.5 if name in self.regression_tasks else 1.0
            terms[name] = scale * precision * ops.cast(losses[name], precision.dtype) + 0.5 * log_variance
        return terms

    def effective_weights(self) -> Dict[str, float]:
        """Return the current factor in front of each task's loss, keyed by task name."""
        values = ops.convert_to_numpy(ops.exp(-self.log_variances))
        return {
            name: float(values[index]) * (0.5 if name in self.regression_tasks else 1.0)
            for index, name in enumerate(self.task_names)
        }

    def get_config(self):
        config = super().get_config()
        config.update(task_names=list(self.task_names), regression_tasks=list(self.regression_tasks))
        return config
