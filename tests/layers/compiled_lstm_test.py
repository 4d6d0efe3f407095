"""Tests for SequentialExpert's compiled multi-expert kernel against its keras.ops loop.

The kernel runs training calls on the TensorFlow backend. Where it cannot be built, these
tests skip with the reason, unless `MTL_LAYERS_REQUIRE_COMPILED_KERNELS=1` (as `.ci/run`
sets) makes that a failure.
"""

import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

import mtl_layers as mtl
from mtl_layers.compat import IS_KERAS_2, backend_name, keras, ops



def _load_fused_cases():
    """Import `fused_lstm_test.py` by path for its mask cases (folders are not packages)."""
    path = pathlib.Path(__file__).with_name("fused_lstm_test.py")
    spec = importlib.util.spec_from_file_location("fused_lstm_cases", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_CASES = _load_fused_cases()
FEATURES = _CASES.FEATURES
TIME = _CASES.TIME
# Right padding, left padding, no valid step, gaps, all valid, one valid step in the middle.
MASK = _CASES.MASK

pytestmark = pytest.mark.skipif(
    backend_name() != "tensorflow", reason="the compiled kernel is a TensorFlow op"
)


def _run_python(script, *args, **environment):
    """Run `script` in a fresh Python process with extra environment variables.

    A variable set to None is removed. Returns the completed process after checking that
    it exited with 0.
    """
    variables = dict(os.environ)
    for name, value in environment.items():
        if value is None:
            variables.pop(name, None)
        else:
            variables[name] = value
    result = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        env=variables,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result


@pytest.fixture(scope="module", autouse=True)
def compiled_kernel():
    """Skip (or fail in CI) when the kernel cannot be built on this machine."""
    from mtl_layers.layers import _compiled_lstm

    status = _compiled_lstm.status()
    if _compiled_lstm.unavailable_reason(training=True) is not None:
        if os.environ.get("MTL_LAYERS_REQUIRE_COMPILED_KERNELS") == "1":
            pytest.fail(f"{status} (MTL_LAYERS_REQUIRE_COMPILED_KERNELS=1 makes this a failure)")
        pytest.skip(status)
    return _compiled_lstm


@pytest.fixture
def kernel_calls(monkeypatch, compiled_kernel):
    """Count the calls that trace the compiled kernel."""
    calls = []
    original = compiled_kernel.run

    def counting_run(*args, **kwargs):
        calls.append(args[0].shape)
        return original(*args, **kwargs)

    monkeypatch.setattr(compiled_kernel, "run", counting_run)
    return calls


def _layer_pair(return_sequences, num_experts=3, units=4, **kwargs):
    """Return (compiled, loop) layers with the same weights."""
    compiled = mtl.SequentialExpert(num_experts, units, return_sequences=return_sequences, **kwargs)
    loop = mtl.SequentialExpert(
        num_experts, units, return_sequences=return_sequences, use_fused_kernel=False, **kwargs
    )
    compiled.build((None, TIME, FEATURES))
    loop.build((None, TIME, FEATURES))
    # Random biases, so a mix-up of the gate layout cannot hide behind zeros and ones.
    weights = [
        np.random.default_rng(index).normal(scale=0.5, size=weight.shape).astype("float32")
        for index, weight in enumerate(compiled.get_weights())
    ]
    compiled.set_weights(weights)
    loop.set_weights(weights)
    return compiled, loop


def _inputs(batch=len(MASK), seed=0):
    # A scale of 3 drives cell states past 3, where a clipping kernel would differ.
    rng = np.random.default_rng(seed)
    return 3.0 * rng.normal(size=(batch, TIME, FEATURES)).astype("float32")


def _outputs_and_gradients(layer, x, mask):
    """Return the training call's outputs and the gradients of a loss on them."""
    import tensorflow as tf

    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        outputs = layer(x, mask=None if mask is None else tf.constant(mask), training=True)
        # A weight per output value, so that every output position has its own gradient.
        weights = tf.reshape(tf.linspace(-1.0, 1.0, tf.size(outputs)), tf.shape(outputs))
        loss = tf.reduce_sum(tf.sin(3.0 * outputs)) + tf.reduce_sum(outputs * weights)
    gradients = tape.gradient(loss, [x] + layer.trainable_weights)
    return outputs.numpy(), [gradient.numpy() for gradient in gradients]


def _assert_matches_loop(compiled, loop, x, mask):
    compiled_outputs, compiled_gradients = _outputs_and_gradients(compiled, x, mask)
    loop_outputs, loop_gradients = _outputs_and_gradients(loop, x, mask)
    np.testing.assert_allclose(compiled_outputs, loop_outputs, rtol=1e-5, atol=1e-6)
    for compiled_gradient, loop_gradient in zip(compiled_gradients, loop_gradients):
        assert np.isfinite(compiled_gradient).all()
        np.testing.assert_allclose(compiled_gradient, loop_gradient, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("use_mask", [True, False])
@pytest.mark.parametrize("use_bias", [True, False])
def test_training_call_equals_loop(kernel_calls, return_sequences, use_mask, use_bias):
    compiled, loop = _layer_pair(return_sequences, use_bias=use_bias)
    _assert_matches_loop(compiled, loop, _inputs(), MASK if use_mask else None)
    assert kernel_calls, "the training call did not run the compiled kernel"


@pytest.mark.parametrize("batch", [65, 200])
@pytest.mark.parametrize("return_sequences", [True, False])
def test_several_row_chunks_equal_loop(kernel_calls, batch, return_sequences):
    # The kernel works in chunks of 16-64 rows, sorted by length. Random masks give every
    # chunk rows that end at different steps, and some rows without a valid step.
    rng = np.random.default_rng(batch)
    mask = rng.random((batch, TIME)) < 0.6
    mask[::7] = False
    compiled, loop = _layer_pair(return_sequences)
    _assert_matches_loop(compiled, loop, _inputs(batch, seed=batch), mask)
    assert kernel_calls


@pytest.mark.parametrize("num_experts, units", [(1, 3), (2, 17)])
def test_odd_sizes_equal_loop(num_experts, units):
    compiled, loop = _layer_pair(True, num_experts=num_experts, units=units)
    _assert_matches_loop(compiled, loop, _inputs(), MASK)


def test_padded_inputs_get_zero_gradients():
    compiled, _ = _layer_pair(True)
    x = _inputs()
    x[~MASK] = np.nan  # Padded values must not reach the outputs or the gradients.
    outputs, gradients = _outputs_and_gradients(compiled, x, MASK)
    assert np.isfinite(outputs).all()
    assert all(np.isfinite(gradient).all() for gradient in gradients)
    np.testing.assert_array_equal(gradients[0][~MASK], 0.0)
    np.testing.assert_array_equal(outputs[2], 0.0)  # The row without a valid step.


def test_all_rows_empty():
    compiled, _ = _layer_pair(False)
    outputs, gradients = _outputs_and_gradients(compiled, _inputs(), np.zeros_like(MASK))
    np.testing.assert_array_equal(outputs, 0.0)
    np.testing.assert_array_equal(gradients[1], 0.0)


def test_inference_call_does_not_use_the_kernel(kernel_calls):
    compiled, loop = _layer_pair(True)
    np.testing.assert_allclose(
        ops.convert_to_numpy(compiled(_inputs(), mask=MASK)),
        ops.convert_to_numpy(loop(_inputs(), mask=MASK)),
        rtol=1e-5,
        atol=1e-6,
    )
    assert not kernel_calls


def test_fit_uses_the_kernel_and_learns(kernel_calls):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, TIME, FEATURES)).astype("float32")
    y = x[:, :, :1].sum(axis=1) > 0
    inputs = keras.Input((TIME, FEATURES))
    experts = mtl.SequentialExpert(2, 8, return_sequences=False)(keras.layers.Masking()(inputs))
    outputs = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Flatten()(experts))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(0.03), loss="binary_crossentropy")
    history = model.fit(x, y.astype("float32"), epochs=8, batch_size=32, verbose=0)
    assert kernel_calls, "fit did not run the compiled kernel"
    assert history.history["loss"][-1] < 0.7 * history.history["loss"][0]


def test_export_holds_only_tensorflow_ops(tmp_path, kernel_calls):
    import tensorflow as tf

    inputs = keras.Input((TIME, FEATURES), name="sequence")
    experts = mtl.SequentialExpert(2, 4, return_sequences=False)(inputs)
    outputs = keras.layers.Dense(1, name="score")(keras.layers.Flatten()(experts))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="sgd", loss="mse")
    x = _inputs(8)
    model.fit(x, np.zeros((8, 1), "float32"), epochs=1, verbose=0)
    assert kernel_calls

    version = mtl.export.export_saved_model(model, tmp_path / "model", version=1)
    graph = (version / "saved_model.pb").read_bytes()
    assert b"MtlLayers" not in graph

    # Another process without the kernel's library serves the export.
    script = (
        "import sys, numpy as np, tensorflow as tf\n"
        "loaded = tf.saved_model.load(sys.argv[1])\n"
        "serve = loaded.signatures['serving_default']\n"
        "print(serve(sequence=tf.constant(np.ones((2, 7, 5), 'float32')))['score'].shape)\n"
    )
    result = _run_python(script, str(version))
    assert "(2, 1)" in result.stdout


@pytest.mark.skipif(not IS_KERAS_2, reason="tf_keras saves SavedModels with traced calls")
def test_keras_2_saved_model_holds_only_tensorflow_ops(tmp_path):
    inputs = keras.Input((TIME, FEATURES))
    outputs = mtl.SequentialExpert(2, 4, return_sequences=False)(inputs)
    model = keras.Model(inputs, outputs)
    model.save(str(tmp_path / "saved"), save_format="tf")
    assert b"MtlLayers" not in (tmp_path / "saved" / "saved_model.pb").read_bytes()


def test_disabled_by_environment_variable():
    # A fresh process reads the variable at its first training call.
    script = (
        "from mtl_layers.layers import _compiled_lstm\n"
        "print(_compiled_lstm.unavailable_reason(training=True))\n"
        "print(_compiled_lstm.status())\n"
    )
    result = _run_python(script, MTL_LAYERS_COMPILED_KERNELS="0")
    assert "MTL_LAYERS_COMPILED_KERNELS=0 is set" in result.stdout
    assert "trains with BlockLSTM" in result.stdout


def test_unclear_environment_variable_is_rejected():
    script = (
        "from mtl_layers.layers import _compiled_lstm\n"
        "for _ in range(2):\n"
        "    try:\n"
        "        _compiled_lstm.unavailable_reason(training=True)\n"
        "    except ValueError as error:\n"
        "        print(error)\n"
    )
    result = _run_python(script, MTL_LAYERS_COMPILED_KERNELS="maybe")
    lines = [line for line in result.stdout.splitlines() if "Received" in line]
    assert len(lines) == 2, result.stdout + result.stderr
    assert "MTL_LAYERS_COMPILED_KERNELS='maybe'" in lines[0]
    assert "Set it to 0 or 1" in lines[0]


def test_missing_compiler_falls_back_with_a_warning(tmp_path):
    script = (
        "import numpy as np, tensorflow as tf\n"
        "import mtl_layers as mtl\n"
        "from mtl_layers.layers import _compiled_lstm\n"
        "layer = mtl.SequentialExpert(2, 3)\n"
        "out = layer(tf.ones((2, 4, 5)), training=True)\n"
        "print(out.shape)\n"
        "print(_compiled_lstm.status())\n"
    )
    result = _run_python(
        script,
        CXX=str(tmp_path / "no-such-compiler"),
        MTL_LAYERS_KERNEL_DIR=str(tmp_path / "kernels"),
        MTL_LAYERS_COMPILED_KERNELS=None,
    )
    assert "(2, 4, 2, 3)" in result.stdout
    assert "could not be built or loaded" in result.stdout
    assert "trains with TensorFlow's BlockLSTM instead" in result.stderr


def test_library_is_built_once_per_cache(tmp_path, compiled_kernel):
    # A second process finds the cached library and does not compile again.
    script = (
        "from mtl_layers.layers import _compiled_lstm\n"
        "print(_compiled_lstm.status())\n"
        "print(_compiled_lstm.library_path().exists())\n"
    )
    # A CXX with an argument, as with ccache, is split like a shell command line.
    compiler = f"env {shutil.which('g++') or shutil.which('c++')}"
    outputs = [
        _run_python(script, CXX=compiler, MTL_LAYERS_KERNEL_DIR=str(tmp_path / "kernels"))
        for _ in range(2)
    ]
    assert "compiled multi-expert kernel" in outputs[0].stdout
    assert "Compiling the CPU kernels of SequentialExpert" in outputs[0].stderr
    assert "Compiling" not in outputs[1].stderr
    assert list((tmp_path / "kernels").glob("*.so"))
    assert "True" in outputs[1].stdout


def test_op_rejects_unsorted_rows(compiled_kernel):
    import tensorflow as tf

    module = compiled_kernel._load()
    with pytest.raises(tf.errors.InvalidArgumentError, match="sorted longest first"):
        module.mtl_layers_multi_expert_lstm(
            tf.zeros((2, 3, 1)),
            tf.zeros((1, 8)),
            tf.zeros((8,)),
            tf.zeros((1, 2, 8)),
            tf.constant([1, 3], tf.int32),
            tf.constant([0, 1], tf.int32),
            tf.constant([[0, 1, 2], [0, 1, 2]], tf.int32),
            return_sequences=True,
        )


@pytest.mark.parametrize("damage", ["not a library", "cut short"])
def test_damaged_cached_library_is_built_again(tmp_path, compiled_kernel, damage):
    # Loading a shared library that was cut short crashes the process (a bus error), so
    # the loader checks the digest that the build wrote before it loads the file.
    script = (
        "import pathlib, shutil, sys\n"
        "from mtl_layers.layers import _compiled_lstm\n"
        "path = _compiled_lstm.library_path()\n"
        "path.parent.mkdir(parents=True)\n"
        "if sys.argv[1] == 'cut short':\n"
        "    data = pathlib.Path(sys.argv[2]).read_bytes()\n"
        "    path.write_bytes(data[: len(data) // 4])\n"
        "    shutil.copy(sys.argv[2] + '.sha256', str(path) + '.sha256')\n"
        "else:\n"
        "    path.write_bytes(b'not a library')\n"
        "print(_compiled_lstm.status())\n"
    )
    built = str(compiled_kernel.library_path())
    result = _run_python(script, damage, built, MTL_LAYERS_KERNEL_DIR=str(tmp_path / "kernels"))
    assert "building it again" in result.stderr
    assert "trains with the compiled multi-expert kernel" in result.stdout


def test_failed_build_is_not_repeated(tmp_path):
    script = (
        "from mtl_layers.layers import _compiled_lstm\n"
        "print(_compiled_lstm.status())\n"
    )
    environment = {
        "CXX": shutil.which("false"),
        "MTL_LAYERS_KERNEL_DIR": str(tmp_path / "kernels"),
        "MTL_LAYERS_COMPILED_KERNELS": None,
    }
    first = _run_python(script, **environment)
    assert "exited with code 1: (no output)" in first.stdout
    assert list((tmp_path / "kernels").glob("*.failed"))

    second = _run_python(script, **environment)
    assert "an earlier build failed" in second.stdout
    assert "Compiling" not in second.stderr


def test_rows_without_steps_get_zeros_in_every_output(compiled_kernel):
    import tensorflow as tf

    module = compiled_kernel._load()
    batch, time, features, experts, units = 70, 9, 3, 2, 4
    # Free tensors full of NaN first, so that the op's outputs may reuse their memory.
    for _ in range(3):
        scratch = tf.fill((time, batch, experts, 4 * units), float("nan"))
        del scratch
    row_steps = np.sort(np.random.default_rng(0).integers(0, time + 1, batch))[::-1]
    outputs = module.mtl_layers_multi_expert_lstm(
        tf.ones((batch, time, features)),
        tf.fill((features, experts * 4 * units), 0.1),
        tf.zeros((experts * 4 * units,)),
        tf.fill((experts, units, 4 * units), 0.1),
        tf.constant(row_steps.astype("int32")),
        tf.range(batch),
        tf.broadcast_to(tf.range(time), (batch, time)),
        return_sequences=True,
    )
    padded = np.arange(time)[:, None] >= row_steps[None, :]  # (time, batch) of sorted rows
    for name, values in zip(("outputs", "hidden", "cell", "gates"), outputs):
        values = values.numpy()
        assert np.isfinite(values).all(), name
        if name != "outputs":
            np.testing.assert_array_equal(values[padded], 0.0, err_msg=name)


def test_mask_of_another_batch_is_named(compiled_kernel):
    import tensorflow as tf

    layer = mtl.SequentialExpert(2, 3)
    function = tf.function(
        lambda x, mask: layer(x, mask=mask, training=True),
        input_signature=[
            tf.TensorSpec((None, None, FEATURES), tf.float32),
            tf.TensorSpec((None, None), tf.bool),
        ],
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="The mask must be"):
        function(tf.ones((2, TIME, FEATURES)), tf.ones((1, TIME), tf.bool))


def test_keras_2_fit_logs_no_autograph_warnings(tmp_path):
    script = (
        "import numpy as np\n"
        "import mtl_layers as mtl\n"
        "from mtl_layers.compat import keras\n"
        "inputs = keras.Input((4, 3))\n"
        "outputs = keras.layers.Flatten()(mtl.SequentialExpert(2, 3, return_sequences=False)(inputs))\n"
        "model = keras.Model(inputs, outputs)\n"
        "model.compile(optimizer='sgd', loss='mse')\n"
        "model.fit(np.ones((8, 4, 3), 'float32'), np.zeros((8, 6), 'float32'), verbose=0)\n"
    )
    result = _run_python(script, TF_USE_LEGACY_KERAS="1")
    assert "AutoGraph could not transform" not in result.stderr


def _raise(error):
    def raise_error(*args, **kwargs):
        raise error

    return raise_error


def test_interrupted_build_is_tried_again(monkeypatch, compiled_kernel):
    # A KeyboardInterrupt during the first build (Ctrl-C in a notebook) must not leave the
    # process unable to train.
    state = {**compiled_kernel._state, "tried": False, "module": None}
    monkeypatch.setattr(compiled_kernel, "_state", state)
    monkeypatch.setattr(compiled_kernel, "library_path", _raise(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        compiled_kernel._load()
    assert state["tried"] is False

    # Any other error falls back with the error as the reason.
    monkeypatch.setattr(compiled_kernel, "library_path", _raise(ValueError("damaged")))
    assert compiled_kernel._load() is None
    assert "damaged" in state["reason"]


def test_unwritable_kernel_folder_is_named(monkeypatch, tmp_path, compiled_kernel):
    monkeypatch.setattr(
        compiled_kernel.tempfile, "TemporaryDirectory", _raise(PermissionError("read-only"))
    )
    with pytest.raises(RuntimeError, match="is not writable.*MTL_LAYERS_KERNEL_DIR"):
        compiled_kernel._build(tmp_path / "kernels" / "kernel.so")
