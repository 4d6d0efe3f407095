"""Tests of the training callbacks."""

import numpy as np
import pytest

import mtl_layers as mtl
from mtl_layers.compat import keras
from mtl_layers.tasks import TaskSpec, compile_for_tasks


def _model():
    inputs = keras.Input((4,))
    model = mtl.models.mmoe([TaskSpec("a", kind="regression")], inputs, num_experts=3)
    compile_for_tasks(model, [TaskSpec("a", kind="regression")], optimizer=keras.optimizers.SGD(0.01))
    return model


def test_stop_on_non_finite_loss_names_the_fix():
    model = _model()
    features = np.ones((32, 4), "float32")
    labels = {"a": np.full((32,), np.nan, "float32")}
    with pytest.raises(mtl.callbacks.NonFiniteLossError, match="epoch 1, batch 1.*learning rate"):
        model.fit(features, labels, epochs=1, batch_size=8, verbose=0,
                  callbacks=[mtl.callbacks.StopOnNonFiniteLoss()])


def test_expert_utilization_in_history():
    model = _model()
    features = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    history = model.fit(features, {"a": np.zeros(32, "float32")}, epochs=2, batch_size=8, verbose=0,
                        callbacks=[mtl.callbacks.ExpertUtilization()])
    share = history.history["a_gate_max_share"]
    entropy = history.history["a_gate_entropy"]
    assert len(share) == 2
    assert 1 / 3 <= share[-1] <= 1.0
    assert 0.0 <= entropy[-1] <= np.log(3) + 1e-6


class _SpoilFirstWeight(keras.callbacks.Callback):
    """Write NaN into the first trainable weight after the first batch."""

    def on_train_batch_end(self, batch, logs=None):
        if batch == 0:
            weight = self.model.trainable_weights[0]
            weight.assign(np.full(tuple(weight.shape), np.nan, "float32"))


def test_stop_on_non_finite_weights_names_the_weight():
    model = _model()
    features = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    with pytest.raises(mtl.callbacks.NonFiniteLossError, match="contains NaN or infinite values after the first batch"):
        model.fit(features, {"a": np.zeros(32, "float32")}, epochs=1, batch_size=8, verbose=0,
                  callbacks=[_SpoilFirstWeight(), mtl.callbacks.StopOnNonFiniteLoss()])


def test_stop_on_nan_input_feature():
    # With TensorFlow's oneDNN kernels the loss of this step stays finite and only the
    # weights turn NaN; without them the loss is NaN. Either way training must stop.
    model = _model()
    features = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    features[1, 0] = np.nan
    with pytest.raises(mtl.callbacks.NonFiniteLossError, match="epoch 1, batch 1|after the first batch"):
        model.fit(features, {"a": np.zeros(32, "float32")}, epochs=1, batch_size=32, verbose=0,
                  callbacks=[mtl.callbacks.StopOnNonFiniteLoss()])


def test_stop_on_non_finite_loss_passes_clean_training():
    model = _model()
    features = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    history = model.fit(features, {"a": np.zeros(32, "float32")}, epochs=2, batch_size=8, verbose=0,
                        callbacks=[mtl.callbacks.StopOnNonFiniteLoss()])
    assert len(history.history["loss"]) == 2
