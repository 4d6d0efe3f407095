"""Training callbacks: stop on a NaN loss, report expert utilisation of the gates."""

import math

import numpy as np
from absl import logging

from mtl_layers.compat import keras
from mtl_layers.layers import TaskGate


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Raise `NonFiniteLossError` as soon as a batch loss is NaN or infinite.

    Keras's `TerminateOnNaN` stops quietly and leaves a model with NaN weights. This
    callback raises an error that names the epoch, the batch and the usual fixes.
    """

    def __init__(self):
        super().__init__()
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise NonFiniteLossError(
                f"The training loss became {float(loss)} at epoch {self._epoch + 1}, batch "
                f"{batch + 1}. Check the inputs and labels for NaN or infinite values, or "
                "lower the learning rate."
            )


class ExpertUtilization(keras.callbacks.Callback):
    """Write each TaskGate's expert utilisation into the epoch logs and the history.

    For every `TaskGate` in the model it adds `<gate>_max_share` (the largest moving
    average gate weight of any expert; 1.0 means the gate collapsed onto one expert) and
    `<gate>_entropy` (the entropy of the average gate weights in nats; log(num_experts)
    means the gate uses all experts equally).
    """

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        for layer in _task_gates(self.model):
            utilization = np.asarray(layer.expert_utilization.numpy(), dtype=np.float64)
            share = utilization / max(utilization.sum(), 1e-12)
            logs[f"{layer.name}_max_share"] = float(share.max())
            logs[f"{layer.name}_entropy"] = float(-(share * np.log(share + 1e-12)).sum())


class EpochLogger(keras.callbacks.Callback):
    """Log one line per epoch with absl logging: the epoch, the time and every metric."""

    def __init__(self, total_epochs: int):
        super().__init__()
        self.total_epochs = total_epochs

    def on_epoch_end(self, epoch, logs=None):
        metrics = ", ".join(f"{name}={value:.4f}" for name, value in sorted((logs or {}).items()))
        logging.info("epoch %d/%d: %s", epoch + 1, self.total_epochs, metrics)


def _task_gates(model):
    found = []
    stack = list(model.layers)
    while stack:
        layer = stack.pop(0)
        if isinstance(layer, TaskGate):
            found.append(layer)
        stack.extend(getattr(layer, "layers", []))
    return found
