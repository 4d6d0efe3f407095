"""Training callbacks: stop on a NaN loss or NaN weights, report expert utilisation of the gates."""

import math

import numpy as np
from absl import logging

from mtl_layers.compat import keras, ops
from mtl_layers.layers import TaskGate


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Raise `NonFiniteLossError` as soon as a batch loss or a weight is NaN or infinite.

    Keras's `TerminateOnNaN` stops quietly and leaves a model with NaN weights. This
    callback raises an error that names the epoch, the batch and the usual fixes.

    It also checks the trainable weights after the first batch and at the end of every
    epoch. On CPU, TensorFlow's oneDNN kernels fuse a matrix product with its ReLU and
    pass a NaN input on as 0, so the logged loss stays finite while the gradient carries
    the NaN into the weights. Predictions then look plausible and are constant.
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
        if self._epoch == 0 and batch == 0:
            self._check_weights("after the first batch")

    def on_epoch_end(self, epoch, logs=None):
        self._check_weights(f"at the end of epoch {epoch + 1}")

    def _check_weights(self, when):
        for weight in self.model.trainable_weights:
            if not np.all(np.isfinite(ops.convert_to_numpy(weight))):
                raise NonFiniteLossError(
                    f"The weight {weight.name!r} contains NaN or infinite values {when}, "
                    "although the logged loss may be finite: on CPU, TensorFlow's fused "
                    "matrix product and ReLU pass a NaN input on as 0 in the forward pass, "
                    "while the gradient still carries it into the weights. Check the inputs "
                    "and labels for NaN or infinite values (for example with "
                    "numpy.isfinite), or lower the learning rate."
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
