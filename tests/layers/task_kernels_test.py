"""Tests for HyperGridDense's per-task kernels against its block forms."""

import numpy as np
import pytest

import mtl_layers as mtl
from mtl_layers.compat import backend_name

NUM_TASKS = 3
FEATURES = 8
UNITS = 6
BLOCK_SHAPE = (4, 3)
POSITIONS = 3
TASK_IDS = np.array([0, 2, 1, 2, 0, 0, 1], dtype="int32")

# Only the per-task kernels run this op (they count each task's examples), so a traced
# graph that contains it took them. `Unique` does not show this: every computation with
# task ids runs it to check one conditioning vector per task.
PER_TASK_OP = "DenseBincount"

ON_TENSORFLOW = backend_name() == "tensorflow"
tensorflow_only = pytest.mark.skipif(
    not ON_TENSORFLOW, reason="per-task kernels use TensorFlow ops; other backends run the block forms"
)


def _inputs(batch=len(TASK_IDS), seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch, POSITIONS, FEATURES)).astype("float32")


def _layers(mode):
    """Return (task embedding, per-task layer, block-form layer), the two with equal weights."""
    embedding = mtl.TaskEmbedding(NUM_TASKS, 5)
    by_task = mtl.HyperGridDense(UNITS, block_shape=BLOCK_SHAPE, mode=mode, task_kernels=True)
    by_block = mtl.HyperGridDense(UNITS, block_shape=BLOCK_SHAPE, mode=mode, task_kernels=False)
    conditioning = embedding(TASK_IDS)
    by_task(_inputs(), conditioning, TASK_IDS)
    by_block(_inputs(), conditioning)
    # Random global vectors and biases, so that a gate mix-up cannot hide behind ones and zeros.
    weights = [
        np.random.default_rng(index).normal(scale=0.7, size=weight.shape).astype("float32")
        for index, weight in enumerate(by_block.get_weights())
    ]
    by_task.set_weights(weights)
    by_block.set_weights(weights)
    return embedding, by_task, by_block


def _naive_outputs(layer, inputs, conditioning):
    """Return x W_b + b with every example's gated kernel W_b built explicitly."""
    gate = np.asarray(layer.compute_gate(conditioning))
    gate = np.repeat(np.repeat(gate, BLOCK_SHAPE[0], axis=1), BLOCK_SHAPE[1], axis=2)
    kernels = np.asarray(layer.kernel)[None] * gate
    return np.einsum("bpi,biu->bpu", inputs, kernels) + np.asarray(layer.bias)


def _gradients(tf, embedding, layer, inputs, task_ids, function=None):
    """Return the outputs and the gradients of a weighted sum of them, as NumPy arrays."""
    inputs = tf.constant(inputs)
    call = function or (lambda x, ids: layer(x, embedding(ids), ids))
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        outputs = call(inputs, tf.constant(task_ids))
        loss = tf.reduce_sum(outputs * tf.range(1.0, UNITS + 1.0))
    variables = layer.trainable_weights + embedding.trainable_weights
    gradients = tape.gradient(loss, variables + [inputs])
    return [np.asarray(outputs)] + [np.asarray(tf.convert_to_tensor(g)) for g in gradients]


def _tolerance(expected):
    """Return an absolute tolerance for float32 sums whose terms reach `expected`'s max."""
    # The two forms add the same terms in different orders. A gradient entry near zero
    # can be the difference of terms near the largest entry, so its rounding error
    # scales with that entry rather than with itself.
    return 1e-6 * max(1.0, float(np.abs(expected).max()))


@tensorflow_only
@pytest.mark.parametrize("mode", ["LG", "GL", "LL"])
def test_outputs_match_naive_kernels(mode):
    embedding, by_task, _ = _layers(mode)
    conditioning = embedding(TASK_IDS)
    outputs = by_task(_inputs(), conditioning, TASK_IDS)
    expected = _naive_outputs(by_task, _inputs(), conditioning)
    np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-6)


@tensorflow_only
@pytest.mark.parametrize("mode", ["LG", "GL", "LL"])
@pytest.mark.parametrize(
    "task_ids",
    [TASK_IDS, np.array([2, 2, 0, 0, 0, 1, 1], "int32")],
    ids=["mixed", "contiguous"],
)
def test_gradients_match_block_form(mode, task_ids):
    import tensorflow as tf

    embedding, by_task, by_block = _layers(mode)
    task_results = _gradients(tf, embedding, by_task, _inputs(), task_ids)
    block_results = _gradients(
        tf, embedding, by_block, _inputs(), task_ids, lambda x, ids: by_block(x, embedding(ids))
    )
    names = ["outputs"] + [w.name for w in by_task.trainable_weights] + ["task table", "inputs"]
    for name, task_value, block_value in zip(names, task_results, block_results):
        np.testing.assert_allclose(
            task_value, block_value, rtol=1e-5, atol=_tolerance(block_value), err_msg=name
        )


@tensorflow_only
def test_unknown_batch_in_tf_function():
    import tensorflow as tf

    embedding, by_task, by_block = _layers("LG")
    signature = [
        tf.TensorSpec((None, POSITIONS, FEATURES), tf.float32),
        tf.TensorSpec((None,), tf.int32),
    ]
    traced = tf.function(lambda x, ids: by_task(x, embedding(ids), ids), input_signature=signature)
    task_results = _gradients(tf, embedding, by_task, _inputs(), TASK_IDS, traced)
    block_results = _gradients(
        tf, embedding, by_block, _inputs(), TASK_IDS, lambda x, ids: by_block(x, embedding(ids))
    )
    for task_value, block_value in zip(task_results, block_results):
        np.testing.assert_allclose(task_value, block_value, rtol=1e-5, atol=_tolerance(block_value))


@tensorflow_only
@pytest.mark.parametrize(
    "task_ids",
    [np.zeros(4, "int32"), np.arange(3, dtype="int32"), np.array([2], "int32")],
    ids=["one task", "one example per task", "single example"],
)
def test_batches_of_any_task_mix(task_ids):
    embedding, by_task, by_block = _layers("GL")
    inputs = _inputs(batch=len(task_ids), seed=1)
    conditioning = embedding(task_ids)
    np.testing.assert_allclose(
        by_task(inputs, conditioning, task_ids),
        by_block(inputs, conditioning),
        rtol=1e-5,
        atol=1e-6,
    )


@tensorflow_only
def test_rank_2_and_rank_4_inputs():
    embedding, by_task, by_block = _layers("LG")
    conditioning = embedding(TASK_IDS)
    rng = np.random.default_rng(2)
    for shape in [(len(TASK_IDS), FEATURES), (len(TASK_IDS), 2, 3, FEATURES)]:
        inputs = rng.normal(size=shape).astype("float32")
        outputs = by_task(inputs, conditioning, TASK_IDS[:, None])
        assert tuple(outputs.shape) == shape[:-1] + (UNITS,)
        np.testing.assert_allclose(
            outputs, by_block(inputs, conditioning), rtol=1e-5, atol=1e-6, err_msg=str(shape)
        )


@tensorflow_only
def test_task_with_two_conditioning_vectors_raises():
    import tensorflow as tf

    _, by_task, _ = _layers("LG")
    conditioning = np.random.default_rng(3).normal(size=(len(TASK_IDS), 5)).astype("float32")
    with pytest.raises(tf.errors.InvalidArgumentError, match="Task id 2 has more than one vector"):
        by_task(_inputs(), conditioning, TASK_IDS)
    traced = tf.function(lambda x, c, ids: by_task(x, c, ids))
    with pytest.raises(tf.errors.InvalidArgumentError, match="differ between examples of one task"):
        traced(_inputs(), conditioning, TASK_IDS)


@tensorflow_only
def test_block_forms_check_task_conditioning():
    import tensorflow as tf

    embedding, _, by_block = _layers("LG")
    # Conditioning from the task ids passes; a model can then train and predict alike.
    by_block(_inputs(), embedding(TASK_IDS), TASK_IDS, training=True)
    conditioning = np.random.default_rng(3).normal(size=(len(TASK_IDS), 5)).astype("float32")
    with pytest.raises(tf.errors.InvalidArgumentError, match="Task id 2 has more than one vector"):
        by_block(_inputs(), conditioning, TASK_IDS, training=True)
    traced = tf.function(lambda x, c, ids: by_block(x, c, ids, training=True))
    with pytest.raises(tf.errors.InvalidArgumentError, match="differ between examples of one task"):
        traced(_inputs(), conditioning, TASK_IDS)


def test_bad_task_ids_rejected():
    embedding, by_task, _ = _layers("LG") if ON_TENSORFLOW else (None, None, None)
    layer = by_task or mtl.HyperGridDense(UNITS, block_shape=BLOCK_SHAPE)
    conditioning = np.ones((len(TASK_IDS), 5), "float32")
    with pytest.raises(ValueError, match="`task_ids` must have shape"):
        layer(_inputs(), conditioning, np.zeros((len(TASK_IDS), 2), "int32"))
    with pytest.raises(ValueError, match="`task_ids` must be integer"):
        layer(_inputs(), conditioning, TASK_IDS.astype("float32"))
    with pytest.raises(ValueError, match="same batch size"):
        layer(_inputs(), conditioning, TASK_IDS[:3])


@tensorflow_only
@pytest.mark.parametrize("task_kernels", [True, False])
def test_batch_mismatch_raises_at_run_time(task_kernels):
    import tensorflow as tf

    embedding = mtl.TaskEmbedding(NUM_TASKS, 5)
    layer = mtl.HyperGridDense(UNITS, block_shape=BLOCK_SHAPE, task_kernels=task_kernels)
    signature = [
        tf.TensorSpec((None, POSITIONS, FEATURES), tf.float32),
        tf.TensorSpec((None,), tf.int32),
    ]
    traced = tf.function(lambda x, ids: layer(x, embedding(TASK_IDS), ids), input_signature=signature)
    with pytest.raises(tf.errors.InvalidArgumentError, match="same batch size"):
        traced(_inputs(), TASK_IDS[:5])


def test_task_ids_without_conditioning_rejected():
    layer = mtl.HyperGridDense(UNITS, block_shape=BLOCK_SHAPE)
    with pytest.raises(ValueError, match="needs `conditioning`"):
        layer(_inputs(), None, TASK_IDS)


def test_task_kernels_argument_validated():
    with pytest.raises(ValueError, match="`task_kernels` must be 'auto', True or False"):
        mtl.HyperGridDense(UNITS, block_shape=BLOCK_SHAPE, task_kernels="yes")


@tensorflow_only
def test_config_round_trip_keeps_choice():
    layer = mtl.HyperGridDense(UNITS, block_shape=BLOCK_SHAPE, task_kernels=False, num_tasks=4)
    config = layer.get_config()
    assert config["task_kernels"] is False
    assert config["num_tasks"] == 4
    clone = mtl.HyperGridDense.from_config(config)
    assert clone.task_kernels is False
    assert clone.num_tasks == 4


def _graph_op_types(tf, layer, embedding, inputs_spec):
    traced = tf.function(lambda x, ids: layer(x, embedding(ids), ids)).get_concrete_function(
        inputs_spec, tf.TensorSpec((None,), tf.int32)
    )
    return {op.type for op in traced.graph.get_operations()}


@tensorflow_only
def test_auto_choice_follows_block_cost():
    import tensorflow as tf

    embedding = mtl.TaskEmbedding(NUM_TASKS, 5)
    # 32 x 32 blocks of a 128 x 64 kernel: the column form adds 2 x 128 values per
    # position, so 8 positions (2048 values) stay below the 8192 kernel values, 32 reach them.
    small_blocks = mtl.HyperGridDense(64, block_shape=(32, 32))
    few_positions = _graph_op_types(
        tf, small_blocks, embedding, tf.TensorSpec((None, 8, 128), tf.float32)
    )
    many_positions = _graph_op_types(
        tf, small_blocks, embedding, tf.TensorSpec((None, 32, 128), tf.float32)
    )
    unknown_positions = _graph_op_types(
        tf, small_blocks, embedding, tf.TensorSpec((None, None, 128), tf.float32)
    )
    assert PER_TASK_OP not in few_positions
    assert PER_TASK_OP in many_positions
    assert PER_TASK_OP in unknown_positions


@tensorflow_only
def test_auto_choice_reads_num_tasks():
    import tensorflow as tf

    embedding = mtl.TaskEmbedding(NUM_TASKS, 5)
    # With 8 positions one kernel per example costs more than the block form (see above),
    # but 3 kernels for a batch of 16 examples cost less: 3 x 8192 <= 16 x 8 x 256.
    layer = mtl.HyperGridDense(64, block_shape=(32, 32), num_tasks=NUM_TASKS)
    static_batch = _graph_op_types(tf, layer, embedding, tf.TensorSpec((16, 8, 128), tf.float32))
    small_batch = _graph_op_types(tf, layer, embedding, tf.TensorSpec((2, 8, 128), tf.float32))
    unknown_batch = _graph_op_types(
        tf, layer, embedding, tf.TensorSpec((None, 8, 128), tf.float32)
    )
    assert PER_TASK_OP in static_batch
    assert PER_TASK_OP not in small_batch
    assert PER_TASK_OP in unknown_batch


def test_num_tasks_validated():
    with pytest.raises(ValueError, match="num_tasks"):
        mtl.HyperGridDense(UNITS, block_shape=BLOCK_SHAPE, num_tasks=0)


@tensorflow_only
def test_xla_falls_back_to_block_form():
    import tensorflow as tf

    embedding = mtl.TaskEmbedding(NUM_TASKS, 5)
    auto = mtl.HyperGridDense(UNITS, block_shape=BLOCK_SHAPE)
    required = mtl.HyperGridDense(UNITS, block_shape=BLOCK_SHAPE, task_kernels=True)
    conditioning = embedding(TASK_IDS)
    expected = auto(_inputs(), conditioning, TASK_IDS)
    compiled = tf.function(lambda x, c, ids: auto(x, c, ids), jit_compile=True)
    np.testing.assert_allclose(
        compiled(_inputs(), conditioning, TASK_IDS), expected, rtol=1e-5, atol=1e-6
    )
    required(_inputs(), conditioning, TASK_IDS)
    with pytest.raises(ValueError, match="XLA"):
        tf.function(lambda x, c, ids: required(x, c, ids), jit_compile=True)(
            _inputs(), conditioning, TASK_IDS
        )


@pytest.mark.skipif(ON_TENSORFLOW, reason="checks the error on the JAX and PyTorch backends")
def test_required_task_kernels_rejected_on_other_backends():
    with pytest.raises(ValueError, match="Keras backend is"):
        mtl.HyperGridDense(UNITS, block_shape=BLOCK_SHAPE, task_kernels=True)


@tensorflow_only
def test_transformer_uses_task_kernels():
    import tensorflow as tf

    tasks = [mtl.tasks.TaskSpec("a"), mtl.tasks.TaskSpec("b", kind="regression")]
    model = mtl.models.hypergrid_transformer(
        tasks, vocab_size=50, sequence_length=15, d_model=32, d_ff=64, block_shape=(16, 16)
    )
    traced = tf.function(model).get_concrete_function(
        {
            "token_ids": tf.TensorSpec((None, 15), tf.int32),
            "task_id": tf.TensorSpec((None,), tf.int32),
        }
    )
    op_types = set()
    for function in traced.graph.as_graph_def().library.function:
        op_types.update(node.op for node in function.node_def)
    op_types.update(op.type for op in traced.graph.get_operations())
    assert PER_TASK_OP in op_types


@tensorflow_only
def test_empty_batch():
    import tensorflow as tf

    embedding, by_task, _ = _layers("LG")
    empty_ids = np.zeros((0,), "int32")
    inputs = tf.constant(np.zeros((0, POSITIONS, FEATURES), "float32"))
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        outputs = by_task(inputs, embedding(empty_ids), empty_ids)
        loss = tf.reduce_sum(outputs)
    assert tuple(outputs.shape) == (0, POSITIONS, UNITS)
    kernel_gradient, inputs_gradient = tape.gradient(loss, [by_task.kernel, inputs])
    assert tuple(inputs_gradient.shape) == (0, POSITIONS, FEATURES)
    np.testing.assert_array_equal(kernel_gradient, np.zeros((FEATURES, UNITS)))
