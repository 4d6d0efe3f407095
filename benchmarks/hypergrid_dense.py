"""Time HyperGridDense against a Dense layer of the same shape and a naive version.

The naive version builds every example's gated kernel, W_b = W * expand(gate_b), and
applies it with a batched matrix product. HyperGridDense never forms that kernel. On
CPU, in training calls and in the inference calls of Keras's `predict`, it runs its
compiled gated product, which applies the gate inside the tiles of the matrix product. Elsewhere it sums gated row-block products or
concatenates column-block products of gated inputs (the block forms, see its docstring),
which the "block forms" variant (`compiled_kernel=False`) runs in every call. The "block
matmuls" variant runs the same block matrix products as
HyperGridDense's chosen loop without the gate, which bounds from below what that loop
can cost. Inputs are `(batch, positions, features)`, as in the feed-forward block of a
transformer. The gate is conditioned on a different vector per example, which the block
forms serve. The "task ids" variant conditions it instead on the embeddings of 5 tasks,
mixed at random in the batch, and passes the task ids with `task_kernels=True`, so that
the layer forms one gated kernel per task. The "sorted task ids" variant sorts that batch
by task first, as `mtl.models.hypergrid_transformer` does, so that the layer need not
reorder its inputs and outputs. The table also names the computation that the default,
`task_kernels="auto"`, chooses for the case.

Each case times a forward pass of an inference call inside the function that Keras's
`predict_on_batch` runs, the forward pass of a training call (`training=True`), and a
training step (a training call, gradients of all weights and of the inputs, SGD update
of the weights), the last two compiled with `tf.function`. The
variants are interleaved in rounds so that machine load affects them alike. Each round
records the process CPU time (`time.process_time`, all threads of this process) and the
wall-clock time, and the table reports the fastest round of each. CPU time is the main
measure because other jobs on a shared machine change it less than the wall-clock time.

    python benchmarks/hypergrid_dense.py --write_docs
    python benchmarks/hypergrid_dense.py --quick
"""

import os
import pathlib
import sys
import time

import numpy as np
from absl import app, flags, logging

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

flags.DEFINE_bool("quick", False, "Tiny sizes and few rounds, to check the script runs.")
flags.DEFINE_integer("rounds", 9, "Timed rounds per case; the fastest is reported.", lower_bound=1)
flags.DEFINE_integer("calls", 3, "Calls per round.", lower_bound=1)
flags.DEFINE_bool("write_docs", False, "Write the result table into docs/benchmarks.md.")

FLAGS = flags.FLAGS

# (batch, positions, features, units, block_shape): the second projection of a
# feed-forward block, d_ff -> d_model.
CASES = [
    (8, 64, 1024, 256, (32, 32)),
    (8, 64, 1024, 256, (32, 64)),
    (8, 64, 1024, 256, (128, 64)),
    (64, 64, 1024, 256, (32, 32)),
    (64, 64, 1024, 256, (128, 64)),
    (64, 64, 1024, 256, (32, 64)),
    (256, 32, 512, 128, (32, 32)),
    (256, 32, 512, 128, (128, 64)),
    # Large blocks: few, wide block products.
    (8, 64, 1024, 256, (256, 64)),
    (64, 64, 1024, 256, (256, 64)),
    (64, 64, 1024, 256, (256, 256)),
    (256, 32, 512, 128, (256, 128)),
]
QUICK_CASES = [(4, 8, 32, 16, (8, 4)), (8, 4, 32, 16, (16, 8))]
CONDITIONING_DIM = 64
NUM_TASKS = 5


def _variants(tf, mtl, keras, features, units, block_shape, task_ids):
    """Return {name: (weights, apply)} for the timed variants of one case, and two layers.

    `weights` returns the variables that the training step updates. Call it only after
    the first `apply`, which builds them. The layers are the HyperGridDense of the block
    forms and that of the task-id variant.
    """
    dense = keras.layers.Dense(units)
    grid = mtl.HyperGridDense(units, block_shape=block_shape, mode="LG")
    blocks = mtl.HyperGridDense(units, block_shape=block_shape, mode="LG", compiled_kernel=False)
    by_task = mtl.HyperGridDense(
        units, block_shape=block_shape, mode="LG", task_kernels=True, compiled_kernel=False
    )
    task_table = tf.constant(
        np.random.default_rng(1).normal(size=(NUM_TASKS, CONDITIONING_DIM)).astype("float32")
    )
    task_conditioning = tf.gather(task_table, task_ids)
    # The same examples with the batch sorted by task, as `hypergrid_transformer` feeds it.
    sorted_ids = tf.sort(task_ids)
    sorted_conditioning = tf.gather(task_table, sorted_ids)
    naive = mtl.HyperGridDense(units, block_shape=block_shape, mode="LG")
    bound = mtl.HyperGridDense(units, block_shape=block_shape, mode="LG")

    def apply_naive(inputs, conditioning):
        if not naive.built:
            naive(inputs, conditioning)
        # W_b = W * expand(gate_b): one (features, units) kernel per example.
        gate = naive.compute_gate(conditioning)
        gate = tf.repeat(tf.repeat(gate, block_shape[0], axis=1), block_shape[1], axis=2)
        kernels = naive.kernel[None] * gate
        return tf.einsum("bti,biu->btu", inputs, kernels) + naive.bias

    def apply_block_matmuls(inputs, conditioning):
        # The block matrix products of HyperGridDense's chosen form, summed or
        # concatenated, without the gate and its multiplications. This bounds the cost of
        # that form from below. The result is x W + b, not the gated output.
        if not bound.built:
            bound(inputs, conditioning)
        flat_inputs = tf.reshape(inputs, (-1, features))
        if bound._uses_row_blocks():
            row_inputs = tf.split(flat_inputs, bound.grid_rows, axis=1)
            row_kernels = tf.split(bound.kernel, bound.grid_rows, axis=0)
            outputs = tf.add_n([tf.matmul(x, w) for x, w in zip(row_inputs, row_kernels)])
        else:
            column_kernels = tf.split(bound.kernel, bound.grid_cols, axis=1)
            outputs = tf.concat([tf.matmul(flat_inputs, w) for w in column_kernels], axis=1)
        return tf.reshape(outputs + bound.bias, tf.concat([tf.shape(inputs)[:-1], [units]], 0))

    return {
        "Dense": (lambda: dense.trainable_weights, lambda inputs, conditioning: dense(inputs)),
        "HyperGridDense": (lambda: grid.trainable_weights, grid),
        "block forms": (lambda: blocks.trainable_weights, blocks),
        "task ids": (
            lambda: by_task.trainable_weights,
            lambda inputs, conditioning: by_task(inputs, task_conditioning, task_ids),
        ),
        "sorted task ids": (
            lambda: by_task.trainable_weights,
            lambda inputs, conditioning: by_task(inputs, sorted_conditioning, sorted_ids),
        ),
        "block matmuls": (lambda: [bound.kernel, bound.bias], apply_block_matmuls),
        "naive": (lambda: naive.trainable_weights, apply_naive),
    }, (grid, by_task)


def _in_predict_function(tf, keras, call):
    """Return a function that runs `call()` inside the function of Keras's `predict_on_batch`.

    Keras traces `predict` and `predict_on_batch` in a function of its own, and that is
    where a model's inference calls run. The model ignores its input and calls `call`,
    which reads the case's tensors.
    """

    class Forward(keras.Model):
        def call(self, unused_data):
            return call()

    from mtl_layers.compat import IS_KERAS_2

    model = Forward()
    model.compile()
    model.make_predict_function()
    predict_function = model.predict_function
    unused = tf.zeros((1,))
    if IS_KERAS_2:
        # tf_keras's predict function reads one batch from an iterator.
        batches = iter(tf.data.Dataset.from_tensors((unused,)).repeat())
        return lambda: predict_function(batches)
    return lambda: predict_function([(unused,)])


def _compiled(tf, keras, name, weights, apply, inputs, conditioning):
    apply(inputs, conditioning)  # build the weights
    variables = weights()

    def call(training):
        if name in ("HyperGridDense", "block forms"):
            return apply(inputs, conditioning, training=training)
        return apply(inputs, conditioning)

    # An inference call as `predict` runs it.
    forward = _in_predict_function(tf, keras, lambda: call(training=False))

    @tf.function
    def training_forward():
        return call(training=True)

    @tf.function
    def train_step():
        # The inputs' gradient is part of the step because inside a model the layer
        # passes it on to the layers below. `training=True`, as `fit` passes it.
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            loss = tf.reduce_mean(tf.square(call(training=True)))
        gradients = tape.gradient(loss, variables + [inputs])
        for variable, gradient in zip(variables, gradients[:-1]):
            variable.assign_sub(1e-3 * gradient)
        return loss, gradients[-1]

    functions = {"forward": forward, "training step": train_step}
    if name in ("Dense", "HyperGridDense"):
        functions["forward, training call"] = training_forward
    return functions


def _time(function, calls):
    """Return (CPU seconds, wall seconds) per call, averaged over `calls` calls."""
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    for _ in range(calls):
        result = function()
    for value in result if isinstance(result, tuple) else (result,):
        np.asarray(value)  # wait for the last call
    cpu, wall = time.process_time() - cpu_start, time.perf_counter() - wall_start
    return cpu / calls, wall / calls


def run_case(tf, mtl, keras, case, rounds, calls):
    """Return the times of one case, the block form's name and the task-id variant's path.

    The times are {(variant, phase): (CPU seconds, wall seconds)} per call, each the
    minimum over the rounds, taken separately for CPU and wall time.
    """
    batch, positions, features, units, block_shape = case
    rng = np.random.default_rng(0)
    inputs = tf.constant(rng.normal(size=(batch, positions, features)).astype("float32"))
    conditioning = tf.constant(rng.normal(size=(batch, CONDITIONING_DIM)).astype("float32"))
    task_ids = tf.constant(rng.integers(0, NUM_TASKS, size=batch), tf.int32)
    functions = {}
    variants, (grid, by_task) = _variants(tf, mtl, keras, features, units, block_shape, task_ids)
    for name, (weights, apply) in variants.items():
        for phase, function in _compiled(tf, keras, name, weights, apply, inputs, conditioning).items():
            function()  # trace
            functions[(name, phase)] = function
    samples = {key: [] for key in functions}
    for _ in range(rounds):
        for key, function in functions.items():
            samples[key].append(_time(function, calls))
    times = {
        key: (min(cpu for cpu, _ in values), min(wall for _, wall in values))
        for key, values in samples.items()
    }
    form = "row blocks" if grid._uses_row_blocks() else "column blocks"
    inputs_3d = tf.reshape(inputs, (batch, positions, features))
    compiled = grid._runs_compiled_product(inputs_3d, positions, training=True)
    # The choice of task_kernels="auto" for these shapes, given the number of tasks as
    # hypergrid_transformer gives it. `by_task` itself forces the per-task path.
    auto = mtl.HyperGridDense(units, block_shape=block_shape, mode="LG", num_tasks=NUM_TASKS)
    auto(inputs[:1], conditioning[:1])
    task_path = "per-task kernels" if auto._runs_task_kernels(batch, positions) else form
    return times, form, task_path, compiled


def main(argv):
    del argv
    import tensorflow as tf

    import mtl_layers as mtl
    from benchmarks import report
    from mtl_layers.compat import keras

    cases = QUICK_CASES if FLAGS.quick else CASES
    rounds, calls = (2, 2) if FLAGS.quick else (FLAGS.rounds, FLAGS.calls)
    rows = [
        "| batch × positions | features → units | block | phase | path | Dense (CPU ms) "
        "| HyperGridDense (CPU ms) | HyperGridDense / Dense | block forms / Dense "
        "| block matmuls / Dense | naive / Dense | task ids, auto path | task ids / Dense "
        "| sorted task ids / Dense |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for index, case in enumerate(cases):
        batch, positions, features, units, block_shape = case
        logging.info("Timing case %d of %d: %s", index + 1, len(cases), case)
        times, form, task_path, compiled = run_case(tf, mtl, keras, case, rounds, calls)
        for phase in ("forward", "forward, training call", "training step"):
            dense, dense_wall = times[("Dense", phase)]

            def ratio(name):
                if (name, phase) not in times:
                    return "–"
                cpu, wall = times[(name, phase)]
                return f"{cpu / dense:.2f} ({wall / dense_wall:.2f})"

            path = "compiled" if compiled else form
            rows.append(
                f"| {batch} × {positions} | {features} → {units} | {block_shape[0]}×{block_shape[1]} "
                f"| {phase} | {path} | {1e3 * dense:.2f} "
                f"| {1e3 * times[('HyperGridDense', phase)][0]:.2f} "
                f"| {ratio('HyperGridDense')} | {ratio('block forms')} | {ratio('block matmuls')} "
                f"| {ratio('naive')} | {task_path} | {ratio('task ids')} "
                f"| {ratio('sorted task ids')} |"
            )
            logging.info("%s %s: %s", case, phase, rows[-1])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    command = "python benchmarks/hypergrid_dense.py" + (" --quick" if FLAGS.quick else " --write_docs")
    section = "\n".join(
        [
            "## HyperGridDense",
            "",
            f"Command: `{command}` on {report.machine_description()} (1-minute load average "
            f"{load:.1f} at the end of the run), TensorFlow {tf.__version__}, mode LG, float32, "
            f"fastest of {rounds} rounds of {calls} calls. "
            "Times are process CPU time (all threads), and each ratio is followed by the "
            "wall-clock ratio in brackets. Target: HyperGridDense at most 1.3× Dense. "
            "Phases: forward is an inference call inside the function that Keras's "
            "`predict_on_batch` runs, for every variant. Both times include that function's "
            "overhead, about 0.2 ms per call in a scratch measurement at 8 × 64 positions. "
            "Forward, training call is the forward "
            "pass alone of a call with `training=True`; the training step is a call with "
            "`training=True`, the gradients of the weights and inputs, and an SGD update. "
            "Path: what HyperGridDense ran, the compiled gated product (training calls and "
            "Keras's `predict` and `evaluate` on CPU, see docs/hypergrid.md) or the block "
            "form it chose (column blocks or row blocks). Block forms: the layer with `compiled_kernel=False`. Block matmuls: "
            "the matrix products of the block form without the gate and its "
            "multiplications, a lower bound on the cost of the form. The naive version forms "
            "one gated kernel per example. Task ids: the layer with `task_kernels=True`, "
            f"conditioned on the embeddings of {NUM_TASKS} tasks mixed at random and called "
            "with the task ids, so that it forms one gated kernel per task. Sorted task ids: "
            "the same with the batch sorted by task, as `hypergrid_transformer` arranges it, "
            "so that the layer does not reorder it. Auto path: the computation that the "
            f"default, `task_kernels=\"auto\"`, chooses for these shapes with "
            f"`num_tasks={NUM_TASKS}`.",
            "",
            *rows,
        ]
    )
    print(section)
    if FLAGS.write_docs:
        report.write_section(report.BENCHMARKS_PAGE, "hypergrid_dense", section)


if __name__ == "__main__":
    app.run(main)
