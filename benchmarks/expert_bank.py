"""Benchmark a training step of ExpertBank against a per-expert loop and the fused bound.

Three networks compute the same first expert layer (E experts of U units on F inputs):
* `ExpertBank(E, U)`;
* a Python loop of E `Dense(U)` layers whose outputs are stacked (the common approach);
* one `Dense(E * U)` layer, the fused matrix product, which is the bound to match.

Each training step runs forward, backward and a plain SGD update inside one compiled
`tf.function` that loops over several steps, so Python call overhead is excluded. The
three networks are timed in turns, `--repeats` times, so slow phases of the machine
affect all three alike; the fastest call per network gives the reported ratio to the
bound. The target is ExpertBank <= 1.1x the bound at every size.

    python benchmarks/expert_bank.py               # full grid, writes docs/benchmarks.md
    python benchmarks/expert_bank.py --quick       # two small sizes, for the test suite
"""

import itertools
import os
import pathlib
import sys
import time

from absl import app, flags, logging

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

flags.DEFINE_bool("quick", False, "Run two small sizes with few repeats.")
flags.DEFINE_integer("features", 512, "Input features F.")
flags.DEFINE_list("batch_sizes", ["256", "1024", "4096"], "Batch sizes.")
flags.DEFINE_list("num_experts", ["8", "32"], "Expert counts E.")
flags.DEFINE_list("units", ["16", "64", "256"], "Units per expert U.")
flags.DEFINE_float("seconds_per_call", 0.2, "Target duration of one timed call; sets the steps per call.")
flags.DEFINE_integer("max_steps", 50, "Most training steps in one timed call.")
flags.DEFINE_integer("repeats", 9, "Timed calls per network, taken in turns with the other networks.")
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


def make_training_loop(model):
    """Return a compiled function that runs `steps` SGD training steps on one batch."""
    import tensorflow as tf

    # Keras 3 wraps each tf.Variable (its `value` property); tf_keras weights are tf.Variables.
    variables = [v if isinstance(v, tf.Variable) else v.value for v in model.trainable_weights]

    @tf.function
    def train(batch, steps):
        loss = tf.constant(0.0)
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
    """Return {network name: (CPU seconds, wall seconds) per training step} for one size.

    The number of steps per timed call is chosen so that a call of the bound takes
    about `--seconds_per_call`. Both values are the minimum over calls. CPU time is the
    time this process's threads ran, which other processes on the machine change far
    less than the wall-clock time.
    """
    import numpy as np
    import tensorflow as tf

    networks = build_networks(FLAGS.features, num_experts, units)
    batch = tf.constant(np.random.default_rng(0).normal(size=(batch_size, FLAGS.features)), tf.float32)
    loops = {name: make_training_loop(model) for name, model in networks.items()}
    one_step = tf.constant(1)
    for loop in loops.values():
        loop(batch, one_step).numpy()  # trace and warm up
    started = time.perf_counter()
    loops["one Dense (bound)"](batch, one_step).numpy()
    seconds_per_step = time.perf_counter() - started
    steps = int(min(max(FLAGS.seconds_per_call / max(seconds_per_step, 1e-6), 1), FLAGS.max_steps))

    wall = {name: [] for name in loops}
    cpu = {name: [] for name in loops}
    for _ in range(FLAGS.repeats):
        for name, loop in loops.items():
            wall_started, cpu_started = time.perf_counter(), time.process_time()
            loop(batch, tf.constant(steps)).numpy()
            cpu[name].append((time.process_time() - cpu_started) / steps)
            wall[name].append((time.perf_counter() - wall_started) / steps)
    return {name: (min(cpu[name]), min(wall[name])) for name in loops}


def main(argv):
    del argv
    from benchmarks import report

    if FLAGS.quick:
        sizes = [(256, 8, 16), (512, 8, 32)]
        FLAGS.repeats = min(FLAGS.repeats, 3)
        FLAGS.seconds_per_call = min(FLAGS.seconds_per_call, 0.02)
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
        rows.append((batch_size, num_experts, units, seconds))
        bound = seconds["one Dense (bound)"][0]
        logging.info(
            "[%d/%d] batch %d, %d experts x %d: ExpertBank %.2fx, loop %.2fx of the bound (%.3f ms)",
            index, len(sizes), batch_size, num_experts, units,
            seconds["ExpertBank"][0] / bound, seconds["Dense loop"][0] / bound, bound * 1e3,
        )  # fmt: skip

    def ratio(seconds, name, statistic):
        return seconds[name][statistic] / seconds["one Dense (bound)"][statistic]

    worst = max(ratio(row[3], "ExpertBank", 0) for row in rows)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    command = "python benchmarks/expert_bank.py" + (" --quick" if FLAGS.quick else "")
    lines = [
        "## ExpertBank training step",
        "",
        f"Command: `{command}`. F = {FLAGS.features} input features; each timed call runs "
        f"about {FLAGS.seconds_per_call} s of training steps inside one `tf.function`; "
        f"{FLAGS.repeats} calls per network, the three networks timed in turns. Machine: "
        f"{report.machine_description()}; 1-minute load average {load:.1f} at the end of the run.",
        "",
        "Ratios are the time per training step (forward, backward, SGD update) divided by "
        "that of one `Dense(E * U)` layer, the fused bound, using the fastest call of each "
        "network. The first ratio uses the process's CPU time, which other processes on a "
        "shared machine change little; the wall-clock ratio is in brackets. Target: "
        "ExpertBank <= 1.1x at every size.",
        "",
        "| batch | experts E | units U | bound (CPU ms/step) | ExpertBank / bound | Dense loop / bound |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for batch_size, num_experts, units, seconds in rows:
        lines.append(
            f"| {batch_size} | {num_experts} | {units} | {seconds['one Dense (bound)'][0] * 1e3:.3f} | "
            f"{ratio(seconds, 'ExpertBank', 0):.2f}x ({ratio(seconds, 'ExpertBank', 1):.2f}x) | "
            f"{ratio(seconds, 'Dense loop', 0):.2f}x ({ratio(seconds, 'Dense loop', 1):.2f}x) |"
        )
    lines += ["", f"Largest ExpertBank / bound ratio: {worst:.2f}x."]
    page = pathlib.Path(FLAGS.output_page) if FLAGS.output_page else report.BENCHMARKS_PAGE
    report.write_section(page, "expert_bank", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    app.run(main)
