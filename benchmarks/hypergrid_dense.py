"""Time HyperGridDense against a Dense layer of the same shape and a naive version.

The naive version builds every example's gated kernel, W_b = W * expand(gate_b), and
applies it with a batched matrix product. HyperGridDense never forms that kernel. It
sums gated row-block products or concatenates column-block products of gated inputs
(see its docstring). The "block matmuls" variant runs the same block matrix products as
HyperGridDense's chosen loop without the gate, which bounds from below what that loop
can cost. Inputs are `(batch, positions, features)`, as in the feed-forward block of a
transformer, and the gate is conditioned on one task embedding per example.

Each case times a forward pass and a training step (forward, gradients of all weights
and of the inputs, SGD update of the weights), each compiled with `tf.function`. The
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
flags.DEFINE_integer("rounds", 9, "Timed rounds per case; the fastest is reported.")
flags.DEFINE_integer("calls", 3, "Calls per round.")
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


def _variants(tf, mtl, keras, features, units, block_shape):
    """Return {name: (weights, apply)} for the timed variants of one case, and the layer.

    `weights` returns the variables that the training step updates. Call it only after
    the first `apply`, which builds them.
    """
    dense = keras.layers.Dense(units)
    grid = mtl.HyperGridDense(units, block_shape=block_shape, mode="LG")
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
        "block matmuls": (lambda: [bound.kernel, bound.bias], apply_block_matmuls),
        "naive": (lambda: naive.trainable_weights, apply_naive),
    }, grid


def _compiled(tf, weights, apply, inputs, conditioning):
    apply(inputs, conditioning)  # build the weights
    variables = weights()

    @tf.function
    def forward():
        return apply(inputs, conditioning)

    @tf.function
    def train_step():
        # The inputs' gradient is part of the step because inside a model the layer
        # passes it on to the layers below.
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            loss = tf.reduce_mean(tf.square(apply(inputs, conditioning)))
        gradients = tape.gradient(loss, variables + [inputs])
        for variable, gradient in zip(variables, gradients[:-1]):
            variable.assign_sub(1e-3 * gradient)
        return loss, gradients[-1]

    return {"forward": forward, "training step": train_step}


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
    """Return the times of one case and whether HyperGridDense sums row blocks.

    The times are {(variant, phase): (CPU seconds, wall seconds)} per call, each the
    minimum over the rounds, taken separately for CPU and wall time.
    """
    batch, positions, features, units, block_shape = case
    rng = np.random.default_rng(0)
    inputs = tf.constant(rng.normal(size=(batch, positions, features)).astype("float32"))
    conditioning = tf.constant(rng.normal(size=(batch, CONDITIONING_DIM)).astype("float32"))
    functions = {}
    variants, grid = _variants(tf, mtl, keras, features, units, block_shape)
    for name, (weights, apply) in variants.items():
        for phase, function in _compiled(tf, weights, apply, inputs, conditioning).items():
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
    return times, grid._uses_row_blocks()


def main(argv):
    del argv
    import tensorflow as tf

    import mtl_layers as mtl
    from benchmarks import report
    from mtl_layers.compat import keras

    cases = QUICK_CASES if FLAGS.quick else CASES
    rounds, calls = (2, 2) if FLAGS.quick else (FLAGS.rounds, FLAGS.calls)
    rows = [
        "| batch × positions | features → units | block | form | phase | Dense (CPU ms) "
        "| HyperGridDense (CPU ms) | HyperGridDense / Dense | block matmuls / Dense "
        "| naive / Dense |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        batch, positions, features, units, block_shape = case
        logging.info("Timing %s", case)
        times, uses_row_blocks = run_case(tf, mtl, keras, case, rounds, calls)
        form = "row blocks" if uses_row_blocks else "column blocks"
        for phase in ("forward", "training step"):
            dense, dense_wall = times[("Dense", phase)]

            def ratio(name):
                cpu, wall = times[(name, phase)]
                return f"{cpu / dense:.2f} ({wall / dense_wall:.2f})"

            rows.append(
                f"| {batch} × {positions} | {features} → {units} | {block_shape[0]}×{block_shape[1]} "
                f"| {form} | {phase} | {1e3 * dense:.2f} | {1e3 * times[('HyperGridDense', phase)][0]:.2f} "
                f"| {ratio('HyperGridDense')} | {ratio('block matmuls')} | {ratio('naive')} |"
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
            "wall-clock ratio in brackets. The training step includes the gradient of the "
            "inputs. Target: HyperGridDense at most 1.3× Dense. Form: the loop that the layer "
            "chose. Block matmuls: the matrix products of that loop without the gate and its "
            "multiplications, a lower bound on the cost of the form. The naive version forms "
            "one gated kernel per example.",
            "",
            *rows,
        ]
    )
    print(section)
    if FLAGS.write_docs:
        report.write_section(report.BENCHMARKS_PAGE, "hypergrid_dense", section)


if __name__ == "__main__":
    app.run(main)
