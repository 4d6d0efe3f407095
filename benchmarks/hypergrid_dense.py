"""Time HyperGridDense against a Dense layer of the same shape and a naive version.

The naive version builds every example's gated kernel, W_b = W * expand(gate_b), and
applies it with a batched matrix product. HyperGridDense never forms that kernel: it
sums gated row-block products or concatenates column-block products of gated inputs
(see its docstring). Inputs are `(batch, positions, features)`, as in the feed-forward
block of a transformer, and the gate is conditioned on one task embedding per example.
Each case times a forward pass and a training step (forward, gradients of all weights
and of the inputs, SGD update of the weights), each compiled with `tf.function`. The
three variants are interleaved in rounds so that machine load affects them alike, and
the reported time is the fastest round, the estimate least affected by other jobs.

    python benchmarks/hypergrid_dense.py --write_docs
    python benchmarks/hypergrid_dense.py --quick
"""

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
    (64, 64, 1024, 256, (32, 32)),
    (64, 64, 1024, 256, (128, 64)),
    (64, 64, 1024, 256, (32, 64)),
    (256, 32, 512, 128, (32, 32)),
    (256, 32, 512, 128, (128, 64)),
]
QUICK_CASES = [(4, 8, 32, 16, (8, 4)), (8, 4, 32, 16, (16, 8))]
CONDITIONING_DIM = 64


def _variants(tf, mtl, keras, features, units, block_shape):
    """Return {name: (layer, apply)} for Dense, HyperGridDense and the naive version."""
    dense = keras.layers.Dense(units)
    grid = mtl.HyperGridDense(units, block_shape=block_shape, mode="LG")
    naive = mtl.HyperGridDense(units, block_shape=block_shape, mode="LG")

    def apply_naive(inputs, conditioning):
        if not naive.built:
            naive(inputs, conditioning)
        # W_b = W * expand(gate_b): one (features, units) kernel per example.
        gate = naive.compute_gate(conditioning)
        gate = tf.repeat(tf.repeat(gate, block_shape[0], axis=1), block_shape[1], axis=2)
        kernels = naive.kernel[None] * gate
        return tf.einsum("bti,biu->btu", inputs, kernels) + naive.bias

    return {
        "Dense": (dense, lambda inputs, conditioning: dense(inputs)),
        "HyperGridDense": (grid, grid),
        "naive": (naive, apply_naive),
    }


def _compiled(tf, layer, apply, inputs, conditioning):
    apply(inputs, conditioning)  # build the weights
    variables = layer.trainable_weights

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
    start = time.perf_counter()
    for _ in range(calls):
        result = function()
    for value in result if isinstance(result, tuple) else (result,):
        np.asarray(value)  # wait for the last call
    return (time.perf_counter() - start) / calls


def run_case(tf, mtl, keras, case, rounds, calls):
    """Return {(variant, phase): seconds per call in the fastest round} for one case."""
    batch, positions, features, units, block_shape = case
    rng = np.random.default_rng(0)
    inputs = tf.constant(rng.normal(size=(batch, positions, features)).astype("float32"))
    conditioning = tf.constant(rng.normal(size=(batch, CONDITIONING_DIM)).astype("float32"))
    functions = {}
    for name, (layer, apply) in _variants(tf, mtl, keras, features, units, block_shape).items():
        for phase, function in _compiled(tf, layer, apply, inputs, conditioning).items():
            function()  # trace
            functions[(name, phase)] = function
    samples = {key: [] for key in functions}
    for _ in range(rounds):
        for key, function in functions.items():
            samples[key].append(_time(function, calls))
    return {key: min(values) for key, values in samples.items()}


def main(argv):
    del argv
    import tensorflow as tf

    import mtl_layers as mtl
    from benchmarks import report
    from mtl_layers.compat import keras

    cases = QUICK_CASES if FLAGS.quick else CASES
    rounds, calls = (2, 2) if FLAGS.quick else (FLAGS.rounds, FLAGS.calls)
    rows = [
        "| batch × positions | features → units | block | phase | Dense (ms) | HyperGridDense (ms) "
        "| naive (ms) | HyperGridDense / Dense | naive / Dense |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        batch, positions, features, units, block_shape = case
        logging.info("Timing %s", case)
        times = run_case(tf, mtl, keras, case, rounds, calls)
        for phase in ("forward", "training step"):
            dense, grid, naive = (times[(name, phase)] for name in ("Dense", "HyperGridDense", "naive"))
            rows.append(
                f"| {batch} × {positions} | {features} → {units} | {block_shape[0]}×{block_shape[1]} "
                f"| {phase} | {1e3 * dense:.2f} | {1e3 * grid:.2f} | {1e3 * naive:.2f} "
                f"| {grid / dense:.2f} | {naive / dense:.2f} |"
            )
            logging.info("%s %s: %s", case, phase, rows[-1])
    command = "python benchmarks/hypergrid_dense.py" + (" --quick" if FLAGS.quick else " --write_docs")
    section = "\n".join(
        [
            "## HyperGridDense",
            "",
            f"Command: `{command}` on {report.machine_description()}, TensorFlow "
            f"{tf.__version__}, mode LG, float32, fastest of {rounds} rounds of {calls} calls. "
            "The training step includes the gradient of the inputs. "
            "Target: HyperGridDense at most 1.3× Dense. The naive version forms one gated "
            "kernel per example.",
            "",
            *rows,
        ]
    )
    print(section)
    if FLAGS.write_docs:
        report.write_section(report.BENCHMARKS_PAGE, "hypergrid_dense", section)


if __name__ == "__main__":
    app.run(main)
