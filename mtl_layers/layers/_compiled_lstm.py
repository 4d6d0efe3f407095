"""The package's compiled kernels: build and load `kernels/*.cc`; run the multi-expert LSTM.

`SequentialExpert` trains fastest with one op that runs the recurrence of all its experts,
forward and backward, and `HyperGridDense` with one op that gates its kernel inside the
tiles of the matrix product (`_compiled_hypergrid`). TensorFlow has no such ops, so the
package ships their C++ source and compiles it on first use, into one library, with the
local C++ compiler against the installed TensorFlow (`tf.sysconfig`), like a TensorFlow
custom op. The library is cached per TensorFlow version, source and compiler flags under
`$MTL_LAYERS_KERNEL_DIR` (default `~/.cache/mtl_layers/kernels`), so later processes only
load it.

The LSTM kernel is used for training calls only (`training=True`, as `fit` and
`train_on_batch` pass it). Inference calls run TensorFlow's own `BlockLSTM`, and so do the
graphs that a SavedModel keeps: TF Serving and other TensorFlow binaries do not have the
compiled op. (HyperGridDense's op also serves inference calls that no SavedModel can
keep; see `_compiled_hypergrid`.) Where the library cannot be built (no compiler, another
platform) or `MTL_LAYERS_COMPILED_KERNELS` is 0, false, no or off, training runs
`BlockLSTM` as well, after one warning that names the reason. Other values than these and
1, true, yes or on raise a ValueError at the first call that could use a kernel.
"""

import contextlib
import hashlib
import os
import pathlib
import shlex
import shutil
import subprocess
import tempfile
import threading
from typing import Optional

import tensorflow as tf
from absl import logging

_KERNELS = pathlib.Path(__file__).resolve().parent / "kernels"
_SOURCES = (_KERNELS / "multi_expert_lstm.cc", _KERNELS / "hypergrid_matmul.cc")
_DISABLE_VARIABLE = "MTL_LAYERS_COMPILED_KERNELS"
_DIR_VARIABLE = "MTL_LAYERS_KERNEL_DIR"
_BUILD_SECONDS = 300

_lock = threading.Lock()
_state = {"module": None, "reason": None, "tried": False, "warned": False}
_disabled_depth = threading.local()


@contextlib.contextmanager
def disabled():
    """Run the calls inside the block without the compiled kernel (used by the export)."""
    _disabled_depth.value = getattr(_disabled_depth, "value", 0) + 1
    try:
        yield
    finally:
        _disabled_depth.value -= 1


def _in_save_context() -> bool:
    try:
        from tensorflow.python.saved_model import save_context
    except ImportError:  # Private module moved: assume a save, the safe side.
        return True
    return save_context.in_save_context()


# The functions that Keras traces for `fit`, `evaluate` and `predict` (and their
# `*_on_batch` forms). Keras keeps them out of SavedModels, so a graph traced inside one
# is never served. tests/layers/compiled_hypergrid_test.py checks both facts.
_KERAS_STEP_FUNCTIONS = frozenset(
    {
        # Keras 3 (keras/src/backend/tensorflow/trainer.py).
        "one_step_on_data",
        "one_step_on_data_distributed",
        "multi_step_on_iterator",
        "multi_step_on_data",
        # tf_keras (Keras 2).
        "train_function",
        "test_function",
        "predict_function",
    }
)


def _outermost_function_name() -> Optional[str]:
    """Return the name of the outermost `tf.function` being traced, or None in eager mode."""
    graph = tf.compat.v1.get_default_graph()
    name = None
    # A FuncGraph has an `outer_graph`, and the graph outside every function has none.
    while hasattr(graph, "outer_graph"):
        name = graph.name
        graph = graph.outer_graph
    return name


def unsaved_call() -> bool:
    """Return whether this call runs eagerly or inside a Keras step function.

    Neither can end up in a SavedModel, so inference calls there may run a compiled op.
    """
    if tf.executing_eagerly():
        return True
    return _outermost_function_name() in _KERAS_STEP_FUNCTIONS


def _gpu_visible() -> bool:
    """Return whether TensorFlow lists a GPU device. The kernel runs on CPU only."""
    return bool(tf.config.list_logical_devices("GPU"))


def _cpu_flags() -> list:
    """Return the vector-instruction flags that this machine's CPU supports."""
    try:
        cpuinfo = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    features = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            features = set(line.split(":", 1)[1].split())
            break
    if {"avx512f", "avx512dq", "avx512bw", "avx512vl", "fma"} <= features:
        return ["-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl", "-mavx2", "-mfma"]
    if {"avx2", "fma"} <= features:
        return ["-mavx2", "-mfma"]
    return []


def _compiler() -> list:
    """Return the compiler command: `$CXX` (which may hold arguments, as in "ccache g++")."""
    if os.environ.get("CXX"):
        command = shlex.split(os.environ["CXX"])
        if shutil.which(command[0]) is None:
            raise RuntimeError(
                f"the compiler in CXX, {command[0]!r}, was not found (set CXX to an "
                "installed C++ compiler, or unset it to use g++)"
            )
        return command
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        raise RuntimeError("no C++ compiler was found (set CXX, or install g++)")
    return [compiler]


def _build_command(output: pathlib.Path) -> list:
    return (
        _compiler()
        + ["-O3", "-shared", "-fPIC", "-w"]
        + _cpu_flags()
        + [str(source) for source in _SOURCES]
        + ["-o", str(output)]
        + tf.sysconfig.get_compile_flags()
        + tf.sysconfig.get_link_flags()
    )


def library_path() -> pathlib.Path:
    """Return where the compiled library for this TensorFlow, source and compiler is cached."""
    digest = hashlib.sha256()
    for source in _SOURCES:
        digest.update(source.read_bytes())
    digest.update(" ".join(_build_command(pathlib.Path("out.so"))).encode())
    cache = pathlib.Path(
        os.environ.get(_DIR_VARIABLE) or pathlib.Path.home() / ".cache" / "mtl_layers" / "kernels"
    ).expanduser()
    return cache / f"mtl_layers_kernels-tf{tf.__version__}-{digest.hexdigest()[:16]}.so"


def _digest_path(path: pathlib.Path) -> pathlib.Path:
    return path.with_name(path.name + ".sha256")


def _failure_path(path: pathlib.Path) -> pathlib.Path:
    return path.with_name(path.name + ".failed")


def _file_digest(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _is_intact(path: pathlib.Path) -> bool:
    """Return whether `path` is the file that a build wrote, byte for byte.

    Loading a damaged shared library can crash the process (a bus error for a file cut
    short), so the library is checked against the digest written beside it first.
    """
    digest = _digest_path(path)
    if not (path.is_file() and digest.is_file()):
        return False
    try:
        return digest.read_text().strip() == _file_digest(path)
    except (OSError, ValueError):  # Unreadable, or not text: a damaged digest file.
        return False


def _build(path: pathlib.Path) -> None:
    """Compile the kernel into `path` through a temporary file, so no process loads half.

    A failed compilation leaves `<library>.failed` with the compiler's message, so later
    processes do not wait for the same failure. Deleting that file makes them try again.
    """
    failure = _failure_path(path)
    if failure.is_file():
        earlier = failure.read_text(errors="replace").strip()
        raise RuntimeError(f"an earlier build failed ({earlier}); delete {failure} to try again")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch_folder = tempfile.TemporaryDirectory(dir=path.parent)
    except OSError as error:
        raise RuntimeError(
            f"the kernel folder {path.parent} is not writable ({error}); set "
            f"{_DIR_VARIABLE} to a writable folder"
        ) from error
    with scratch_folder as scratch:
        output = pathlib.Path(scratch) / path.name
        command = _build_command(output)
        # A warning, because the first call that uses a kernel waits for it (20-60 s).
        logging.warning(
            "Compiling the CPU kernels of SequentialExpert (the multi-expert LSTM "
            "kernel) and HyperGridDense into %s; this happens once per TensorFlow version, "
            "kernel source, compiler and CPU flags.",
            path,
        )
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=_BUILD_SECONDS, check=False
        )
        if result.returncode != 0:
            message = (
                f"the compiler {command[0]} exited with code {result.returncode}: "
                f"{result.stderr.strip()[-600:] or '(no output)'}"
            )
            failure.write_text(message + "\n")
            raise RuntimeError(message)
        digest = pathlib.Path(scratch) / (path.name + ".sha256")
        digest.write_text(_file_digest(output) + "\n")
        # The digest is renamed first, so a process that finds the new library finds its digest.
        os.replace(digest, _digest_path(path))
        os.replace(output, path)


_OFF_VALUES = ("0", "false", "no", "off")
_ON_VALUES = ("", "1", "true", "yes", "on")


def _kernels_switched_off() -> bool:
    """Return whether `MTL_LAYERS_COMPILED_KERNELS` turns the kernels off; raise if unclear."""
    value = os.environ.get(_DISABLE_VARIABLE, "1").strip().lower()
    if value in _OFF_VALUES:
        return True
    if value in _ON_VALUES:
        return False
    raise ValueError(
        f"`{_DISABLE_VARIABLE}` must be one of {', '.join(_ON_VALUES[1:])} (use the compiled "
        f"kernels) or {', '.join(_OFF_VALUES)} (skip them). Received: "
        f"{_DISABLE_VARIABLE}={os.environ[_DISABLE_VARIABLE]!r}. Set it to 0 or 1, or unset it."
    )


def _load():
    """Return the loaded op module, building it first when needed; None with a reason."""
    with _lock:
        if _state["tried"]:
            return _state["module"]
        # Checked before anything is remembered, so that every call raises until it is fixed.
        switched_off = _kernels_switched_off()
        _state["tried"] = True
        if switched_off:
            _state["reason"] = f"{_DISABLE_VARIABLE}={os.environ[_DISABLE_VARIABLE]} is set"
            return None

        try:
            path = library_path()
            if path.exists() and not _is_intact(path):
                # For example, cut short by a full disk or a partial copy of the cache.
                problem = (
                    "does not match the digest its build wrote"
                    if _digest_path(path).exists()
                    else "has no digest file beside it"
                )
                logging.warning("%s %s; building it again.", path, problem)
            if not _is_intact(path):
                _build(path)
            module = tf.load_op_library(str(path))
        except Exception as error:  # Any failure means: train with BlockLSTM instead.
            _state["reason"] = f"it could not be built or loaded: {error}"
            return None
        except BaseException:
            # An interrupted build (Ctrl-C in a notebook) is tried again at the next call.
            _state["tried"] = False
            raise
        _register_gradient(module)
        _state["module"] = module
        return module


def _register_gradient(module) -> None:
    def gradient(op, outputs_grad, hidden_grad, cell_grad, gates_grad):
        # Only `outputs` leave the layer; the other outputs are kept for this gradient.
        del hidden_grad, cell_grad, gates_grad
        _, hidden, cell, gates = op.outputs
        grads = module.mtl_layers_multi_expert_lstm_grad(
            *op.inputs,
            hidden,
            cell,
            gates,
            outputs_grad,
            return_sequences=op.get_attr("return_sequences"),
        )
        # No gradient for row_steps, source_rows and step_positions.
        return list(grads) + [None, None, None]

    def hypergrid_gradient(op, outputs_grad):
        return list(module.mtl_layers_hyper_grid_matmul_grad(*op.inputs, outputs_grad))

    for op_name, function in (
        ("MtlLayersMultiExpertLstm", gradient),
        ("MtlLayersHyperGridMatmul", hypergrid_gradient),
    ):
        try:
            tf.RegisterGradient(op_name)(function)
        except KeyError:  # Registered by an earlier load in this process.
            pass


@tf.autograph.experimental.do_not_convert
def call_reason(training, inference: bool = False) -> Optional[str]:
    """Return why this call may not run any compiled kernel, before loading the library.

    The kernels serve training calls on CPU only, and never a graph that is exported.
    With `inference=True`, inference calls may run them too where `unsaved_call()` holds:
    eagerly, and inside the functions that Keras's `evaluate` and `predict` trace.
    """
    # A symbolic `training` tensor (possible in tf_keras) counts as not training.
    if not (isinstance(training, (bool, int)) and training):
        if not inference:
            return "the call is not a training call"
        if not unsaved_call():
            return (
                "the inference call is traced outside Keras's fit, evaluate and predict "
                "functions, and its graph may be saved"
            )
    if getattr(_disabled_depth, "value", 0) or _in_save_context():
        return "the graph is being exported"
    # With a GPU, TensorFlow's own ops keep the work on the GPU.
    if _gpu_visible():
        return "it runs on CPU only, and a GPU is visible"
    return None


@tf.autograph.experimental.do_not_convert
def unavailable_reason(training) -> Optional[str]:
    """Return why this call cannot use the compiled kernel, or None when it can."""
    reason = call_reason(training)
    if reason is not None:
        return reason
    if _load() is None:
        explicitly_disabled = _state["reason"].startswith(_DISABLE_VARIABLE)
        if not _state["warned"] and not explicitly_disabled:
            _state["warned"] = True
            logging.warning(
                "SequentialExpert trains with TensorFlow's BlockLSTM instead of the "
                "compiled multi-expert kernel because %s. Training steps take about "
                "1.5-2.5x longer; results are the same. Set %s=0 to skip the kernel "
                "without this warning.",
                _state["reason"],
                _DISABLE_VARIABLE,
            )
        return _state["reason"]
    return None


@tf.autograph.experimental.do_not_convert
def status() -> str:
    """Return one line: whether the compiled kernel is in use, and if not, why."""
    if _gpu_visible():
        return "SequentialExpert trains with BlockLSTM: the compiled kernel runs on CPU only, and a GPU is visible"
    module = _load()
    if module is not None:
        flags = " ".join(["-O3"] + _cpu_flags())
        return f"SequentialExpert trains with the compiled multi-expert kernel (built with {flags})"
    return f"SequentialExpert trains with BlockLSTM: the compiled kernel is not in use because {_state['reason']}"


@tf.autograph.experimental.do_not_convert
def run(inputs, kernel, bias, recurrent_kernel, row_steps, source_rows, step_positions,
        return_sequences):
    """Run every expert's LSTM over its rows' valid steps; return the layer's outputs.

    Args:
        inputs: `(batch, time, features)` float32, in the caller's order.
        kernel: `(features, experts * 4 * units)` float32, expert-major columns.
        bias: `(experts * 4 * units,)` float32.
        recurrent_kernel: `(experts, units, 4 * units)` float32.
        row_steps: `(batch,)` int32, the valid steps of each row in sorted order, longest
            first.
        source_rows: `(batch,)` int32, the caller's row of each sorted row.
        step_positions: `(batch, time)` int32, row j's valid steps in time order, first
            `row_steps[j]` entries read.
        return_sequences: as in `SequentialExpert`.

    Returns:
        `(batch, time, experts, units)`, or `(batch, experts, units)` without sequences,
        with the masked-step outputs of `keras.layers.RNN`.
    """
    outputs, _, _, _ = _load().mtl_layers_multi_expert_lstm(
        inputs,
        kernel,
        bias,
        recurrent_kernel,
        row_steps,
        source_rows,
        step_positions,
        return_sequences=return_sequences,
    )
    return outputs
