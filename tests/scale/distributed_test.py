"""Distributed training with `tf.distribute` matches single-process training.

Each test starts child processes (`distributed_worker.py`) because logical CPU devices
and `TF_CONFIG` must be set before TensorFlow starts. Training uses plain SGD on the same
global batches, so the replicas' summed gradients equal the single-process gradient and
the trained weights agree up to float32 rounding of the different summation order.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from mtl_layers.compat import IS_KERAS_2

HERE = pathlib.Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
WORKER = HERE / "distributed_worker.py"

# Trained weights of distributed and single-process runs agree to this tolerance: the
# replicas add float32 gradients in a different order, and two epochs of SGD keep that
# rounding difference far below it.
RTOL = 1e-4
ATOL = 1e-5

# Every builder trains under MirroredStrategy in Keras 3 mode and in Keras 2 mode. The
# TFRS model, which exists only in Keras 2 mode, is tested in tests/tfrs/distributed_test.py.
MIRRORED_MODELS = ["mmoe", "omoe", "shared_bottom", "ple", "mose", "hypergrid_transformer", "mmoe_raw"]

# Models that fail under MirroredStrategy, as {model: expected error type}. The test
# requires them to fail, so after a fix the test fails and names the entry to drop.
#
# Keras 3.15 (TensorFlowTrainer._maybe_symbolic_build) averages the first input batch
# across replicas before it builds the model, and TensorFlow's AddN rejects bool and string
# tensors: MoSE's bool mask and the raw string features fail. tf_keras has no such step.
KERAS_3_MIRRORED_FAILURES = {"mose": "InvalidArgumentError", "mmoe_raw": "InvalidArgumentError"}
KNOWN_MIRRORED_FAILURES = {} if IS_KERAS_2 else KERAS_3_MIRRORED_FAILURES
# The same averaging step fails for every input under MultiWorkerMirroredStrategy in Keras
# 3.15: the collective reduce cannot take the PerReplica batch ("Attempt to convert a value
# (PerReplica...) to a Tensor"). Multi-worker training works in Keras 2 mode.
MULTI_WORKER_FAILS = not IS_KERAS_2

# Hard limits for the child processes on a loaded 2-core machine.
MIRRORED_TIMEOUT_S = 240
MULTI_WORKER_TIMEOUT_S = 180


def _child_environment(**extra):
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT)] + [p for p in environment.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    environment.pop("TF_CONFIG", None)
    environment["TF_CPP_MIN_LOG_LEVEL"] = "2"
    environment.update(extra)
    return environment


def _free_ports(count):
    """Return `count` distinct free TCP ports on 127.0.0.1, chosen by the kernel."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _assert_weights_close(worker, expected_path, actual_path):
    expected = worker.load_weights(expected_path)
    actual = worker.load_weights(actual_path)
    assert len(actual) == len(expected), f"{actual_path.name}: different number of weights"
    for index, (want, got) in enumerate(zip(expected, actual)):
        np.testing.assert_allclose(
            got, want, rtol=RTOL, atol=ATOL, err_msg=f"{actual_path.name}: weight {index} differs"
        )


def _assert_weights_changed(worker, initial, trained_path):
    trained = worker.load_weights(trained_path)
    changed = [not np.array_equal(before, after) for before, after in zip(initial, trained)]
    assert any(changed), f"{trained_path.name}: training left every weight unchanged"


@pytest.mark.parametrize("replicas", [2])
def test_mirrored_matches_single_device(tmp_path, replicas, distributed_worker):
    worker = distributed_worker
    command = [
        sys.executable, str(WORKER), "--mode=mirrored", f"--replicas={replicas}",
        f"--models={','.join(MIRRORED_MODELS)}", f"--weights_dir={tmp_path}",
    ]  # fmt: skip
    result = subprocess.run(
        command,
        env=_child_environment(),
        capture_output=True,
        text=True,
        timeout=MIRRORED_TIMEOUT_S,
    )
    failed = {}
    for line in result.stderr.splitlines():
        if line.startswith("FAILED "):
            name, _, message = line[len("FAILED ") :].partition(": ")
            failed[name] = message
    assert failed or result.returncode == 0, (
        f"worker crashed (exit {result.returncode}):\n{result.stdout}\n{result.stderr[-4000:]}"
    )
    unexpected = {name: message for name, message in failed.items() if name not in KNOWN_MIRRORED_FAILURES}
    assert not unexpected, f"models failed under MirroredStrategy: {unexpected}"
    for name, error_type in KNOWN_MIRRORED_FAILURES.items():
        assert name in failed, f"{name} now trains under MirroredStrategy; drop it from the known failures"
        assert failed[name].startswith(error_type), f"{name} failed differently: {failed[name]}"

    for model_name in MIRRORED_MODELS:
        if model_name in KNOWN_MIRRORED_FAILURES:
            continue
        single = tmp_path / f"{model_name}_single.npz"
        mirrored = tmp_path / f"{model_name}_mirrored.npz"
        assert single.exists(), f"{model_name}: no single-device result"
        assert mirrored.exists(), f"{model_name}: no MirroredStrategy result"
        _assert_weights_close(worker, single, mirrored)


def _stop(processes):
    for process in processes:
        if process.poll() is None:
            process.kill()
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass


def run_multi_worker(weights_dir, models, timeout_s, num_workers=2):
    """Train `models` in `num_workers` worker processes on 127.0.0.1 and wait for them.

    Each worker gets a `TF_CONFIG` with ports picked free at run time, starts from the
    `<model>_initial.npz` files in `weights_dir` and writes its results there. Fails the
    test after `timeout_s`, and kills the workers that are still running in every case.
    Returns the workers' exit codes and the last 3000 characters of each one's output.
    """
    ports = _free_ports(num_workers)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    processes = []
    logs = []
    try:
        for index in range(num_workers):
            log = open(weights_dir / f"worker_{index}.log", "w+", encoding="utf-8")
            logs.append(log)
            tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
            processes.append(
                subprocess.Popen(
                    [
                        sys.executable, str(WORKER), "--mode=multi_worker",
                        f"--models={','.join(models)}", f"--weights_dir={weights_dir}",
                    ],  # fmt: skip
                    env=_child_environment(TF_CONFIG=tf_config),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        deadline = time.monotonic() + timeout_s
        for process in processes:
            remaining = max(1.0, deadline - time.monotonic())
            try:
                process.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                pytest.fail(f"multi-worker training timed out after {timeout_s} s")
    finally:
        _stop(processes)
        outputs = []
        for log in logs:
            log.seek(0)
            outputs.append(log.read()[-3000:])
            log.close()
    return [process.returncode for process in processes], outputs


def test_multi_worker_matches_single_process(tmp_path, distributed_worker):
    from mtl_layers.compat import keras

    worker = distributed_worker
    import tensorflow as tf

    # Reference: the same model trained in this process on the whole global batch.
    keras.utils.set_random_seed(0)
    initial, trained = worker.train(
        "mmoe", tf.distribute.get_strategy(), None, epochs=2,
        history_path=tmp_path / "mmoe_single_history.json",
    )  # fmt: skip
    worker.save_weights(tmp_path / "mmoe_initial.npz", initial)
    worker.save_weights(tmp_path / "mmoe_single.npz", trained)

    return_codes, outputs = run_multi_worker(tmp_path, ["mmoe"], MULTI_WORKER_TIMEOUT_S)

    if MULTI_WORKER_FAILS:
        for index, return_code in enumerate(return_codes):
            assert return_code != 0, "Keras 3 now trains multi-worker; drop MULTI_WORKER_FAILS"
            assert "PerReplica" in outputs[index], f"worker {index} failed differently:\n{outputs[index]}"
        return
    for index, return_code in enumerate(return_codes):
        assert return_code == 0, f"worker {index} failed:\n{outputs[index]}"
    for index in range(2):
        result = tmp_path / f"mmoe_multi_worker_{index}.npz"
        _assert_weights_changed(worker, initial, result)
        _assert_weights_close(worker, tmp_path / "mmoe_single.npz", result)
    # The logs of every batch are those of the global batch, not a sum over the workers.
    expected = worker.load_history(worker.batch_history_path(tmp_path / "mmoe_single_history.json"))
    for index in range(2):
        path = worker.batch_history_path(tmp_path / f"mmoe_multi_worker_{index}_history.json")
        actual = worker.load_history(path)
        assert sorted(actual) == sorted(expected), f"{path.name}: different log keys"
        for name, values in expected.items():
            np.testing.assert_allclose(
                actual[name], values, rtol=RTOL, atol=ATOL, err_msg=f"{path.name}: batch {name} differs"
            )
