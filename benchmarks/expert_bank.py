"""Benchmark a training step of ExpertBank against a per-expert loop and the fused bound.

Three networks compute the same first expert layer (E experts of U units on F inputs):
* `ExpertBank(E, U)`;
* a Python loop of E `Dense(U)` layers whose outputs are stacked (the common approach);
* one `Dense(E * U)` layer, the fused matrix product, which is the bound to match.

Each training step runs forward, backward and a plain SGD update inside one compiled
`tf.function` that loops over `--steps` steps, so Python call overhead is excluded. The
three networks are timed in turns, `--repeats` times, and the median per network is
kept, so slow phases of the machine affect all three alike. The page section reports
the ratios to the bound; the target is ExpertBank <= 1.1x the bound at every size.

    python benchmarks/expert_bank.py               # full grid, writes docs/benchmarks.md
    python benchmarks/expert_bank.py --quick       # two small sizes, for the test suite
"""

import itertools
import pathlib
import statistics
import sys
import time

from absl import app, flags, logging

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

flags.DEFINE_bool("quick", False, "Run two small sizes with few repeats.")
flags.DEFINE_integer("features", 512, "Input features F.")
flags.DEFINE_list("batch_sizes", ["256", "1024", "4096"], "Batch sizes.")
flags.DEFINE_list("num_experts", ["8", "32"], "Expert counts E.")
flags.DEFINE_list("units", ["16", "64", "256"], "Units per expert U.")
flags.DEFINE_integer("steps", 10, "Training steps per timed call.")
flags.DEFINE_integer("repeats", 7, "Timed calls per network; the median is reported.")
flags.DEFINE_string("output_page", None, "Markdown page to write; defaults to docs/benchmarks.md.")

FLAGS = flags.FLAGS


def build_networks(features, num_experts, units):
    """Return {name: keras.Model} for the three ways to compute the expert layer."""
    import mtl_layers as mtl
    from mtl_layers.compat import keras

    inputs = keras.Input((features,))
    bank = keras.Model(inputs, mtl.ExpertBank(num_experts, units)(inputs), name="expert_bank")

    inputs = keras.Input((features,))
    per_expert = [keras.layers.Dense(units, activation="relu")(inputs) for _ in range(num_experts)]
    stacked = keras.layers.Concatenate(axis=-2)(
        [keras.layers.Reshape((1, units))(output) for output in per_expert]
    )
    loop = keras.Model(inputs, stacked, name="dense_loop")

    inputs = keras.Input((features,))
    fused = keras.Model(
        inputs, keras.layers.Dense(num_experts * units, activation="relu")(inputs), name="fused_dense"
    )
    return {"ExpertBank": bank, "Dense loop": loop, "one Dense (bound)": fused}


def make_training_loop(model, steps):
    """Return a compiled function that runs `steps` SGD training steps on one batch."""
    import tensorflow as tf

    variables = [getattr(v, "value", v) for v in model.trainable_weights]

    @tf.function
    def train(batch):
        for _ in tf.range(steps):
            with tf.GradientTape() as tape:
                outputs = model(batch, training=True)
                loss = tf.reduce_mean(tf.square(outputs))
            gradients = tape.gradient(loss, variables)
            for variable, gradient in zip(variables, gradients):
                variable.assign_sub(1e-3 * gradient)
        return loss

    return train


def measure(batch_size, num_experts, units):
    """Return {network name: median seconds per training step} for one size."""
    import numpy as np
    import tensorflow as tf

    networks = build_networks(FLAGS.features, num_experts, units)
    batch = tf.constant(np.random.default_rng(0).normal(size=(batch_size, FLAGS.features)), tf.float32)
    loops = {name: make_training_loop(model, FLAGS.steps) for name, model in networks.items()}
    for loop in loops.values():
        loop(batch).numpy()  # trace and warm up
    timings = {name: [] for name in loops}
    for _ in range(FLAGS.repeats):
        for name, loop in loops.items():
            started = time.perf_counter()
            loop(batch).numpy()
            timings[name].append((time.perf_counter() - started) / FLAGS.steps)
    return {name: statistics.median(values) for name, values in timings.items()}


def main(argv):
    del argv
    from benchmarks import report

    if FLAGS.quick:
        sizes = [(256, 8, 16), (512, 8, 32)]
        FLAGS.repeats = min(FLAGS.repeats, 3)
        FLAGS.steps = min(FLAGS.steps, 3)
    else:
        sizes = list(
            itertools.product(
                [int(v) for v in FLAGS.batch_sizes],
                [int(v) for v in FLAGS.num_experts],
                [int(v) for v in FLAGS.units],
            )
        )

    rows = []
    for index, (batch_size, num_experts, units) in enumerate(sizes, start=1):
        seconds = measure(batch_size, num_experts, units)
        bound = seconds["one Dense (bound)"]
        rows.append((batch_size, num_experts, units, seconds, bound))
        logging.info(
            "[%d/%d] batch %d, %d experts x %d: ExpertBank %.2fx, loop %.2fx of the bound (%.3f ms)",
            index, len(sizes), batch_size, num_experts, units,
            seconds["ExpertBank"] / bound, seconds["Dense loop"] / bound, bound * 1e3,
        )  # fmt: skip

    worst = max(row[3]["ExpertBank"] / row[4] for row in rows)
    command = "python benchmarks/expert_bank.py" + (" --quick" if FLAGS.quick else "")
    lines = [
        "## ExpertBank training step",
        "",
        f"Command: `{command}` (F = {FLAGS.features} input features, {FLAGS.steps} steps per "
        f"timed call, median of {FLAGS.repeats} calls, networks timed in turns). Machine: "
        f"{report.machine_description()}.",
        "",
        "Ratios are time per training step divided by that of one `Dense(E * U)` layer "
        "(the fused bound). Target: ExpertBank <= 1.1x at every size.",
        "",
        "| batch | experts E | units U | bound (ms/step) | ExpertBank / bound | Dense loop / bound |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for batch_size, num_experts, units, seconds, bound in rows:
        lines.append(
            f"| {batch_size} | {num_experts} | {units} | {bound * 1e3:.3f} | "
            f"{seconds['ExpertBank'] / bound:.2f}x | {seconds['Dense loop'] / bound:.2f}x |"
        )
    lines += ["", f"Largest ExpertBank / bound ratio: {worst:.2f}x."]
    page = pathlib.Path(FLAGS.output_page) if FLAGS.output_page else report.BENCHMARKS_PAGE
    report.write_section(page, "expert_bank", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    app.run(main)
