"""The layers and model builders give TensorFlow's numbers under the JAX and PyTorch backends.

This process (Keras 3, TensorFlow backend) runs every case of `backend_worker.py` and
stores the initial weights. A child process per backend loads them and computes the same
outputs and one SGD step, and the test compares outputs, loss and trained weights. The
MMoE model exported from JAX with `model.export` must serve the JAX outputs through
`tf.saved_model.load`.
"""

import importlib.util
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from mtl_layers.compat import IS_KERAS_2

HERE = pathlib.Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
WORKER = HERE / "backend_worker.py"

# float32 kernels of different libraries (oneDNN, XLA, ATen) sum in different orders;
# these tolerances cover that rounding for outputs of size ~1 and one SGD step.
RTOL = 1e-4
ATOL = 1e-5
CHILD_TIMEOUT_S = 300

# Cases that fail on a backend because of a known library bug: {backend: {case: bug}}.
# The test requires them to fail, so after a fix it fails and names the entry to drop.
KNOWN_FAILURES = {
    "jax": {},
    "torch": {},
}

pytestmark = pytest.mark.skipif(
    IS_KERAS_2, reason="Keras 2 (tf_keras) has only the TensorFlow backend"
)


@pytest.fixture(scope="module")
def backend_worker(load_test_module):
    """Return `backend_worker.py`, the child process that runs each backend's cases."""
    return load_test_module("backend_worker", WORKER)


def _backend_installed(backend):
    module = {"jax": "jax", "torch": "torch"}[backend]
    return importlib.util.find_spec(module) is not None


@pytest.fixture(scope="module")
def tensorflow_results(tmp_path_factory, backend_worker):
    """Run every case on the TensorFlow backend; return `(results, weights file)`."""
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("the reference numbers come from a process on the TensorFlow backend")
    worker = backend_worker
    results = {}
    for name in worker.CASES:
        case_results, _, _ = worker.run_case(name)
        results.update(case_results)
    path = tmp_path_factory.mktemp("tensorflow") / "tensorflow.npz"
    np.savez(path, **results)
    return results, path


def _start_backend(backend, weights_path, output_dir):
    """Start the worker on `backend` in a child process; return the process."""
    environment = dict(os.environ)
    environment.pop("TF_USE_LEGACY_KERAS", None)
    environment["KERAS_BACKEND"] = backend
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT)] + [p for p in environment.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    environment["TF_CPP_MIN_LOG_LEVEL"] = "2"
    command = [sys.executable, str(WORKER), f"--weights={weights_path}"]
    command.append(f"--output={output_dir / f'{backend}.npz'}")
    if backend == "jax":
        command.append(f"--export_dir={output_dir / 'jax_export'}")
    # Files, not pipes: a child blocked on a full pipe would stall while the other is read.
    log = open(output_dir / f"{backend}.log", "w", encoding="utf-8")
    try:
        return subprocess.Popen(command, env=environment, stdout=log, stderr=log)
    finally:
        log.close()


@pytest.fixture(scope="module")
def backend_runs(tensorflow_results, tmp_path_factory):
    """Run the worker on JAX and PyTorch at the same time; return {backend: (process, out)}.

    The two children spend most of their time importing and tracing, so running them side
    by side keeps this file within a few minutes on a loaded machine.
    """
    _, weights_path = tensorflow_results
    output_dir = tmp_path_factory.mktemp("backends")
    processes = {
        backend: _start_backend(backend, weights_path, output_dir)
        for backend in ("jax", "torch")
        if _backend_installed(backend)
    }
    runs = {}
    try:
        for backend, process in processes.items():
            process.wait(timeout=CHILD_TIMEOUT_S)
            log = (output_dir / f"{backend}.log").read_text(encoding="utf-8", errors="replace")
            runs[backend] = (process.returncode, log, output_dir)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    return runs


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_backend_matches_tensorflow(tensorflow_results, backend_runs, backend, backend_worker):
    if backend not in backend_runs:
        pytest.skip(f"{backend} is not installed; `pip install -e .[backends]` installs it")
    reference, _ = tensorflow_results
    returncode, log, output_dir = backend_runs[backend]
    failed_cases = {}
    for line in log.splitlines():
        if line.startswith("FAILED "):
            name, _, message = line[len("FAILED ") :].partition(": ")
            failed_cases[name] = message
    assert failed_cases or returncode == 0, (
        f"{backend} worker crashed (exit {returncode}):\n{log[-4000:]}"
    )
    known = KNOWN_FAILURES[backend]
    unexpected = {name: message for name, message in failed_cases.items() if name not in known}
    assert not unexpected, f"{backend}: cases failed:\n" + "\n".join(
        f"{name}: {message}" for name, message in unexpected.items()
    )
    fixed = sorted(set(known) - set(failed_cases))
    assert not fixed, f"{backend}: {fixed} now run; remove them from KNOWN_FAILURES"

    actual = dict(np.load(output_dir / f"{backend}.npz"))
    compared = [
        key
        for key in reference
        if key.split("/")[1] != "initial" and key.split("/")[0] not in known
    ]
    missing = [key for key in compared if key not in actual]
    assert not missing, f"{backend} produced no result for {missing[:5]}"
    for key in compared:
        np.testing.assert_allclose(
            actual[key], reference[key], rtol=RTOL, atol=ATOL, err_msg=f"{backend}: {key}"
        )

    if backend == "jax":
        _check_saved_model_serves(backend_worker, output_dir / "jax_export", actual)


def _check_saved_model_serves(worker, export_dir, actual):
    import tensorflow as tf

    _, inputs, _ = worker.CASES["mmoe"]()
    loaded = tf.saved_model.load(str(export_dir))
    signature = loaded.signatures["serving_default"]
    (input_name,) = signature.structured_input_signature[1].keys()
    served = signature(**{input_name: tf.constant(inputs[0])})
    served = [served[key].numpy() for key in sorted(served)]
    expected = [actual[f"export/outputs/{index}"] for index in range(len(served))]
    assert len(served) == 2, f"expected one served output per task, got {len(served)}"
    for index, (got, want) in enumerate(zip(served, expected)):
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=f"served output {index}")
