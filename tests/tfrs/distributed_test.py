"""`MultiTaskModel` under `tf.distribute` matches single-process training.

The tests reuse the harness of `tests/scale/distributed_test.py`: child processes of
`tests/scale/distributed_worker.py` train with plain SGD on the same global batches, with
and without a strategy, and the trained weights and training histories must agree up to
float32 rounding. The worker's TFRS models:

- `tfrs`: MMoE ranking tasks on raw string and numeric features.
- `tfrs_weighted`: fixed loss weights, uncertainty weighting, per-task sample weights, a
  weight penalty added as a layer loss, and a last global batch of 7 rows, which two
  replicas split unevenly.
- `tfrs_retrieval`: ranking tasks and a retrieval task. Each replica scores its queries
  against the candidates of its own part of the batch only, so it cannot match
  single-process training and is checked for training only.
"""

import math
import subprocess
import sys

import numpy as np
import pytest

from mtl_layers.compat import IS_KERAS_2

pytestmark = pytest.mark.skipif(
    not IS_KERAS_2,
    reason="TensorFlow Recommenders needs Keras 2 (TF_USE_LEGACY_KERAS=1); the Keras 2 run covers this",
)

# Models whose distributed training must match single-process training.
MATCHING_MODELS = ["tfrs", "tfrs_weighted"]
RETRIEVAL_MODEL = "tfrs_retrieval"

# The tolerance of the other distributed tests, for the trained weights and for every
# history value (the losses and metrics of two epochs).
RTOL = 1e-4
ATOL = 1e-5

# Hard limits for the child processes on a loaded 2-core machine. The multi-worker run
# trains both matching models in one pair of worker processes.
MIRRORED_TIMEOUT_S = 240
MULTI_WORKER_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def harness(scale_harness):
    return scale_harness


@pytest.fixture(scope="module")
def worker(distributed_worker):
    return distributed_worker


def _assert_histories_close(worker, expected_path, actual_path):
    expected = worker.load_history(expected_path)
    actual = worker.load_history(actual_path)
    assert sorted(actual) == sorted(expected), f"{actual_path.name}: different history keys"
    assert "val_loss" in expected, f"{expected_path.name}: no evaluation results"
    for name, values in expected.items():
        np.testing.assert_allclose(
            actual[name], values, rtol=RTOL, atol=ATOL, err_msg=f"{actual_path.name}: {name} differs"
        )


def test_mirrored_matches_single_device(tmp_path, harness, worker):
    models = MATCHING_MODELS + [RETRIEVAL_MODEL]
    command = [
        sys.executable, str(harness.WORKER), "--mode=mirrored", "--replicas=2",
        f"--models={','.join(models)}", f"--weights_dir={tmp_path}",
    ]  # fmt: skip
    result = subprocess.run(
        command,
        env=harness._child_environment(),
        capture_output=True,
        text=True,
        timeout=MIRRORED_TIMEOUT_S,
    )
    assert result.returncode == 0, (
        f"worker failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr[-4000:]}"
    )

    for model_name in MATCHING_MODELS:
        harness._assert_weights_close(
            worker, tmp_path / f"{model_name}_single.npz", tmp_path / f"{model_name}_mirrored.npz"
        )
        _assert_histories_close(
            worker,
            tmp_path / f"{model_name}_single_history.json",
            tmp_path / f"{model_name}_mirrored_history.json",
        )

    history = worker.load_history(tmp_path / f"{RETRIEVAL_MODEL}_mirrored_history.json")
    for name in ("loss", "retrieval_loss", "val_retrieval_loss", "click_loss", "rating_loss"):
        assert all(math.isfinite(value) for value in history[name]), f"{name}: {history[name]}"
    assert history["loss"][-1] < history["loss"][0], f"training did not lower the loss: {history['loss']}"


def test_multi_worker_matches_single_process(tmp_path, harness, worker):
    import tensorflow as tf

    from mtl_layers.compat import keras

    # Reference: the same models trained in this process on the whole global batches.
    initial_weights = {}
    for model_name in MATCHING_MODELS:
        keras.utils.set_random_seed(0)
        initial, trained = worker.train(
            model_name,
            tf.distribute.get_strategy(),
            None,
            epochs=2,
            history_path=tmp_path / f"{model_name}_single_history.json",
        )
        initial_weights[model_name] = initial
        worker.save_weights(tmp_path / f"{model_name}_initial.npz", initial)
        worker.save_weights(tmp_path / f"{model_name}_single.npz", trained)

    return_codes, outputs = harness.run_multi_worker(tmp_path, MATCHING_MODELS, MULTI_WORKER_TIMEOUT_S)
    for index, return_code in enumerate(return_codes):
        assert return_code == 0, f"worker {index} failed:\n{outputs[index]}"

    for model_name in MATCHING_MODELS:
        for index in range(len(return_codes)):
            result = tmp_path / f"{model_name}_multi_worker_{index}.npz"
            harness._assert_weights_changed(worker, initial_weights[model_name], result)
            harness._assert_weights_close(worker, tmp_path / f"{model_name}_single.npz", result)
            _assert_histories_close(
                worker,
                tmp_path / f"{model_name}_single_history.json",
                tmp_path / f"{model_name}_multi_worker_{index}_history.json",
            )
