"""MMoE trains under `ParameterServerStrategy` with a sharded embedding table.

The test starts a cluster on 127.0.0.1 with ports picked free at run time: two workers and
one parameter server, each a `tf.distribute.Server` in its own process, and a chief
process that trains with `model.fit`. The chief runs in a child process as well, because
a coordinator connects TensorFlow's eager context to the cluster for the rest of the
process. All four processes run `parameter_server_worker.py`, and the test kills them in
every case.
"""

import json
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest

from mtl_layers.compat import IS_KERAS_2

HERE = pathlib.Path(__file__).resolve().parent
WORKER = HERE / "parameter_server_worker.py"

# tf_keras 2.21 `Model.fit` creates a `ClusterCoordinator` and schedules its steps on the
# workers. Keras 3.15 has no parameter-server path. No module under keras/src refers to
# ParameterServerStrategy or ClusterCoordinator, and it has no `DatasetCreator`. Its
# trainer calls `strategy.run` outside `ClusterCoordinator.schedule`, which TensorFlow 2.21
# warns may execute on the coordinator instead of the workers.
# NOTE: the Keras 3 part comes from reading the Keras 3.15 and TensorFlow 2.21 sources. No
# test runs Keras 3 `fit` under ParameterServerStrategy.
pytestmark = pytest.mark.skipif(
    not IS_KERAS_2,
    reason="model.fit supports ParameterServerStrategy only in Keras 2 mode (TF_USE_LEGACY_KERAS=1): "
    "Keras 3.15 has no ClusterCoordinator path, so its steps would not run on the workers. "
    "The Keras 2 run covers this.",
)

NUM_WORKERS = 2
NUM_PS = 1
# A hard limit for the whole cluster run on a loaded 2-core machine.
TIMEOUT_S = 150


def _read_logs(logs):
    outputs = {}
    for name, log in logs.items():
        log.seek(0)
        outputs[name] = log.read()[-3000:]
    return outputs


def run_cluster(tmp_path, timeout_s, harness):
    """Run the cluster until the chief exits, and return its exit code and every task's output.

    `harness` is the `scale_harness` fixture, which starts and stops the processes.
    """
    ports = harness._free_ports(1 + NUM_WORKERS + NUM_PS)
    addresses = [f"127.0.0.1:{port}" for port in ports]
    cluster = {
        "chief": addresses[:1],
        "worker": addresses[1 : 1 + NUM_WORKERS],
        "ps": addresses[1 + NUM_WORKERS :],
    }
    tasks = [("worker", index) for index in range(NUM_WORKERS)] + [("ps", index) for index in range(NUM_PS)]
    tasks.append(("chief", 0))

    processes = {}
    logs = {}
    try:
        for task_type, index in tasks:
            name = f"{task_type}_{index}"
            logs[name] = open(tmp_path / f"{name}.log", "w+", encoding="utf-8")
            tf_config = json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})
            if task_type == "chief":
                role = ["--role=chief", f"--result={tmp_path / 'result.json'}"]
            else:
                role = ["--role=server"]
            processes[name] = subprocess.Popen(
                [sys.executable, str(WORKER)] + role,
                env=harness._child_environment(TF_CONFIG=tf_config),
                stdout=logs[name],
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        chief = processes["chief_0"]
        servers = {name: process for name, process in processes.items() if name != "chief_0"}
        while chief.poll() is None:
            # Servers never exit on their own, so any server exit is a failure.
            exited = [name for name, process in servers.items() if process.poll() is not None]
            if exited:
                pytest.fail(f"servers {exited} exited before the chief finished:\n{_read_logs(logs)}")
            if time.monotonic() > deadline:
                pytest.fail(f"parameter-server training timed out after {timeout_s} s:\n{_read_logs(logs)}")
            time.sleep(0.5)
    finally:
        harness._stop(list(processes.values()))
        outputs = _read_logs(logs)
        for log in logs.values():
            log.close()
    return chief.returncode, outputs


def test_mmoe_trains_with_sharded_embedding(tmp_path, scale_harness):
    return_code, outputs = run_cluster(tmp_path, TIMEOUT_S, scale_harness)
    assert return_code == 0, f"chief failed:\n{outputs['chief_0']}"
    result = json.loads((tmp_path / "result.json").read_text(encoding="utf-8"))

    # The partitioner split the item table, and its shards live on the parameter server.
    embedding = result["item_embedding"]
    assert embedding["type"] == "ShardedVariable", f"item table not sharded: {embedding}"
    assert len(embedding["shard_devices"]) == 2, f"item table shards: {embedding['shard_devices']}"
    for device in embedding["shard_devices"]:
        assert "/job:ps/" in device, f"item table shard not on a parameter server: {device}"
    # Every other variable is below the partitioner's minimum size and stays whole, on a
    # parameter server.
    assert result["other_variables"], "the model has no variables besides the item table"
    for variable in result["other_variables"]:
        assert variable["type"] != "ShardedVariable", f"small variable sharded: {variable}"
        for device in variable["shard_devices"]:
            assert "/job:ps/" in device, f"variable not on a parameter server: {variable}"

    assert result["all_weights_finite"], "training produced non-finite weights"
    losses = np.asarray(result["history_loss"])
    assert np.isfinite(losses).all(), f"non-finite training losses: {losses}"
    assert losses[-1] < losses[0], f"training loss did not fall: {losses}"
    assert result["loss_after"] < 0.8 * result["loss_before"], (
        f"loss on the training rows fell too little: {result['loss_before']} -> {result['loss_after']}"
    )
    # Rows of the items in the data changed, so the workers' updates reached the sharded table.
    assert result["embedding_rows_changed"] > 0, "training left the item table unchanged"
