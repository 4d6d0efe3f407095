"""Training-step speed of SequentialExpert against separate LSTM layers and one wide LSTM.

Four ways to run K LSTM experts of U units over the same sequence, timed side by side
in one process for each size:

* `sequential_expert`: `mtl_layers.SequentialExpert(K, U)` as users get it. On the
  TensorFlow backend a training call runs the package's compiled multi-expert kernel,
  one op for all experts, forward and backward.
* `sequential_expert_block_lstm`: the same layer with the compiled kernel turned off, so
  that it runs TensorFlow's fused `BlockLSTM`, one op per expert (the path of inference
  calls, and of training where the kernel cannot be compiled).
* `sequential_expert_loop`: the same layer with `use_fused_kernel=False`, its keras.ops
  loop that advances all experts together (the path of JAX, PyTorch and XLA).
* `separate_lstms`: K `keras.layers.LSTM(U)` layers, the straightforward implementation.
* `one_wide_lstm`: one `keras.layers.LSTM(K * U)`, a lower bound on the loop overhead
  (one loop), although its recurrent product couples all experts and costs K times more.

A training step is the forward pass with a mask (`training=True`), the gradient of a squared-error loss and
an SGD update, compiled with `tf.function`. The script reports the fastest step's process
CPU time and wall time per variant and their ratios, and the arithmetic rate of the fused
layer and of the separate layers: about 6·B·T·K·(F + U)·4U floating-point operations per
step (a multiply-add is 2, and the backward pass costs about twice the forward). With
`--write_docs` it writes them to its section of `docs/benchmarks.md`:

    python benchmarks/sequential_expert.py --write_docs
    python benchmarks/sequential_expert.py --quick   # a smoke run
"""

import contextlib
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags, logging  # noqa: E402

import mtl_layers as mtl  # noqa: E402
from mtl_layers.compat import IS_KERAS_2, keras  # noqa: E402
from mtl_layers.layers import _compiled_lstm  # noqa: E402

# `benchmarks.report` writes the docs section; it lives at the repository root.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

FLAGS = flags.FLAGS
flags.DEFINE_bool("quick", False, "Tiny sizes and few steps, to check that the script runs.")
flags.DEFINE_integer("steps", 5, "Timed training steps per variant and size.", lower_bound=1)
flags.DEFINE_integer(
    "rounds",
    3,
    "Alternating rounds over the variants. The table reports each variant's minimum step "
    "time over all steps of all rounds, for wall time and CPU time separately.",
    lower_bound=1,
)
flags.DEFINE_bool("write_docs", False, "Write the results into docs/benchmarks.md.")

# (batch, time, features, experts, units)
SIZES = (
    (32, 50, 32, 4, 32),
    (32, 50, 32, 8, 32),
    (64, 100, 32, 8, 16),
    (128, 50, 32, 4, 32),
    (256, 50, 32, 4, 32),
    (256, 50, 32, 8, 32),
    (512, 50, 32, 4, 32),
)
QUICK_SIZES = ((16, 8, 4, 2, 4),)


VARIANTS = (
    "sequential_expert",
    "sequential_expert_block_lstm",
    "sequential_expert_loop",
    "separate_lstms",
    "one_wide_lstm",
)


def _variant_layers(name, num_experts, units):
    if name in ("sequential_expert", "sequential_expert_block_lstm"):
        return [mtl.SequentialExpert(num_experts, units)]
    if name == "sequential_expert_loop":
        return [mtl.SequentialExpert(num_experts, units, use_fused_kernel=False)]
    if name == "separate_lstms":
        return [keras.layers.LSTM(units, return_sequences=True) for _ in range(num_experts)]
    return [keras.layers.LSTM(num_experts * units, return_sequences=True)]


def _train_step_function(layers, compiled_kernel=True):
    optimizer = tf.keras.optimizers.SGD(0.01) if IS_KERAS_2 else keras.optimizers.SGD(0.01)

    @tf.function
    def step(sequence, mask):
        # The step is traced once, so the context decides the kernel for every call.
        kernel_choice = contextlib.nullcontext() if compiled_kernel else _compiled_lstm.disabled()
        with tf.GradientTape() as tape, kernel_choice:
            outputs = [layer(sequence, mask=mask, training=True) for layer in layers]
            loss = tf.add_n([tf.reduce_mean(tf.square(output)) for output in outputs])
        variables = [weight for layer in layers for weight in layer.trainable_weights]
        gradients = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(gradients, variables))
        return loss

    return step


def _time_steps(step, sequence, mask, count):
    """Return the (wall, process CPU) seconds of the fastest of `count` training steps."""
    wall, cpu = [], []
    for _ in range(count):
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        step(sequence, mask).numpy()
        wall.append(time.perf_counter() - wall_start)
        cpu.append(time.process_time() - cpu_start)
    return min(wall), min(cpu)


def measure(size, steps, rounds):
    """Return `{variant: {"wall": seconds, "cpu": seconds}}` per training step for one size.

    Each value is the fastest step over all rounds: interference from other processes
    only ever adds time, so the minimum is the closest to the step's own cost.
    """
    batch, length, features, num_experts, units = size
    rng = np.random.default_rng(0)
    sequence = tf.constant(rng.normal(size=(batch, length, features)).astype("float32"))
    lengths = rng.integers(length // 2, length + 1, size=batch)
    mask = tf.constant(np.arange(length)[None, :] < lengths[:, None])
    variants = VARIANTS
    functions = {}
    for name in variants:
        layers = _variant_layers(name, num_experts, units)
        functions[name] = _train_step_function(
            layers, compiled_kernel=name != "sequential_expert_block_lstm"
        )
        functions[name](sequence, mask)  # Trace, build and warm up.
    results = {name: [] for name in variants}
    for round_index in range(rounds):
        for name in variants:
            results[name].append(_time_steps(functions[name], sequence, mask, steps))
        logging.info("size %s round %d/%d: %s", size, round_index + 1, rounds, results)
    return {
        name: {"wall": min(wall for wall, _ in values), "cpu": min(cpu for _, cpu in values)}
        for name, values in results.items()
    }


def _markdown(rows, command, steps, rounds):
    lines = [
        "## SequentialExpert training step",
        "",
        f"Command: `{command}` ({'Keras 2 (tf_keras)' if IS_KERAS_2 else 'Keras 3'} mode). "
        f"Machine: {_machine()}. Fastest step of {rounds} alternating rounds of "
        f"{steps} steps per variant; forward with a mask, gradient and SGD update under `tf.function`. "
        "Ratios use the process's CPU time, which other processes on a shared machine change "
        "little; wall-clock ratios are in brackets. "
        f"1-minute load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.",
        "",
        "Target: separate LSTMs / SequentialExpert >= 2, SequentialExpert / one wide LSTM <= 1.3.",
        "",
        "| batch | time | features | K | units | SequentialExpert CPU ms | BlockLSTM path CPU ms | "
        "keras.ops loop CPU ms | K separate LSTMs CPU ms | one LSTM of K·units CPU ms | "
        "separate / SequentialExpert | SequentialExpert / wide | BlockLSTM path / SequentialExpert | "
        "loop / SequentialExpert | GFLOP/s SequentialExpert, separate |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size, result in rows:
        ours, block, loop, separate, wide = (result[name] for name in VARIANTS)
        flops = _training_flops(size)
        lines.append(
            "| " + " | ".join(str(value) for value in size)
            + f" | {ours['cpu'] * 1e3:.1f} | {block['cpu'] * 1e3:.1f} | {loop['cpu'] * 1e3:.1f} | "
            f"{separate['cpu'] * 1e3:.1f} | {wide['cpu'] * 1e3:.1f} | "
            f"{separate['cpu'] / ours['cpu']:.2f} ({separate['wall'] / ours['wall']:.2f}) | "
            f"{ours['cpu'] / wide['cpu']:.2f} ({ours['wall'] / wide['wall']:.2f}) | "
            f"{block['cpu'] / ours['cpu']:.2f} ({block['wall'] / ours['wall']:.2f}) | "
            f"{loop['cpu'] / ours['cpu']:.2f} ({loop['wall'] / ours['wall']:.2f}) | "
            f"{flops / ours['cpu'] / 1e9:.0f}, {flops / separate['cpu'] / 1e9:.0f} |"
        )  # fmt: skip
    return "\n".join(lines)


def _training_flops(size):
    """Estimate the floating-point operations of one training step of K LSTM experts.

    Per step and expert the forward pass multiplies [x_t, h_{t-1}], of F + U values, by a
    (F + U) x 4U kernel: B·(F + U)·4U multiply-adds. The backward pass needs two such
    products (input and weight gradients), so a training step costs about 3 forward passes,
    and a multiply-add is 2 operations.
    """
    batch, length, features, num_experts, units = size
    return 6 * batch * length * num_experts * (features + units) * 4 * units


def _machine():
    from benchmarks.report import machine_description

    return machine_description()


def main(argv):
    del argv
    keras.utils.set_random_seed(0)
    sizes = QUICK_SIZES if FLAGS.quick else SIZES
    steps = 2 if FLAGS.quick else FLAGS.steps
    rounds = 1 if FLAGS.quick else FLAGS.rounds
    rows = []
    for size in sizes:
        result = measure(size, steps, rounds)
        rows.append((size, result))
        ours = result["sequential_expert"]["cpu"]
        logging.info(
            "size %s: SequentialExpert %.1f CPU ms, separate %.2fx slower, wide LSTM %.2fx of ours",
            size, ours * 1e3, result["separate_lstms"]["cpu"] / ours, result["one_wide_lstm"]["cpu"] / ours,
        )  # fmt: skip
    flags_given = [
        flag.serialize() for flag in FLAGS.get_flags_for_module(sys.modules[__name__]) if flag.present
    ]
    command = " ".join(["python benchmarks/sequential_expert.py"] + flags_given)
    markdown = _markdown(rows, command, steps, rounds) + "\n\n" + _compiled_lstm.status() + "."
    print(markdown)
    if FLAGS.write_docs and not FLAGS.quick:
        from benchmarks.report import BENCHMARKS_PAGE, write_section

        write_section(BENCHMARKS_PAGE, "sequential_expert", markdown)
        logging.info("Wrote the results to %s", BENCHMARKS_PAGE)


if __name__ == "__main__":
    app.run(main)
