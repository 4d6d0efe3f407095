"""Time a HyperGrid transformer's training step against its plain Dense version.

Three models from `mtl.models.hypergrid_transformer`, with the same sizes, are trained on
one batch that mixes 5 tasks:

- "dense": `feed_forward="dense"`, the vanilla multi-task baseline;
- "block forms": HyperGrid with `task_kernels=False` and `compiled_kernel=False` in
  every `HyperGridDense`, which gates each example's kernel block by block;
- "per-task kernels": HyperGrid as the builder makes it, which sorts the batch by task
  and forms one gated kernel per task (with 5 tasks in a batch of 64, the layers prefer
  them to the compiled gated product);
- "compiled": HyperGrid with `num_tasks=None` in every `HyperGridDense`, so that its
  training calls on CPU run the compiled gated product (one op that applies the gate
  inside the tiles of the matrix product).

Each model's `train_on_batch` (forward, loss, gradients, Adam update) is timed in
interleaved rounds, and the table reports the fastest round by process CPU time
(`time.process_time`, all threads of this process).

    python benchmarks/hypergrid_transformer.py --write_docs
    python benchmarks/hypergrid_transformer.py --quick
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
flags.DEFINE_integer("rounds", 7, "Timed rounds per model; the fastest is reported.", lower_bound=1)
flags.DEFINE_integer("steps", 5, "Training steps per round.", lower_bound=1)
flags.DEFINE_bool("write_docs", False, "Write the result table into docs/benchmarks.md.")

FLAGS = flags.FLAGS

NUM_TASKS = 5
VOCAB_SIZE = 8000
# (d_model, d_ff, sequence_length, batch): the GLUE experiment's size, and a wider one.
SIZES = [(64, 128, 48, 64), (256, 1024, 64, 64)]
QUICK_SIZES = [(16, 32, 8, 8)]
BLOCK_SHAPE = (16, 16)
QUICK_BLOCK_SHAPE = (8, 8)


def _model(mtl, keras, size, block_shape, feed_forward, task_kernels, compiled_kernel=True,
           forget_num_tasks=False):
    d_model, d_ff, sequence_length, _ = size
    keras.utils.set_random_seed(0)
    tasks = [mtl.tasks.TaskSpec(f"task_{index}") for index in range(NUM_TASKS)]
    model = mtl.models.hypergrid_transformer(
        tasks,
        vocab_size=VOCAB_SIZE,
        sequence_length=sequence_length,
        d_model=d_model,
        d_ff=d_ff,
        num_heads=4,
        num_layers=2,
        block_shape=block_shape,
        feed_forward=feed_forward,
    )
    for layer in model.layers:
        for sublayer in layer._flatten_layers():
            if isinstance(sublayer, mtl.HyperGridDense):
                sublayer.task_kernels = task_kernels
                sublayer.compiled_kernel = compiled_kernel
                if forget_num_tasks:
                    sublayer.num_tasks = None
    model.compile(optimizer="adam", loss={task.name: task.loss() for task in tasks})
    return model


def _batch(size):
    _, _, sequence_length, batch = size
    rng = np.random.default_rng(0)
    task_id = rng.integers(0, NUM_TASKS, size=batch).astype("int32")
    inputs = {
        "token_ids": rng.integers(1, VOCAB_SIZE, size=(batch, sequence_length)).astype("int32"),
        "task_id": task_id,
    }
    names = [f"task_{index}" for index in range(NUM_TASKS)]
    labels = {name: rng.integers(0, 2, size=(batch, 1)).astype("float32") for name in names}
    # Each output learns only from its own task's examples.
    weights = {name: (task_id == index).astype("float32") for index, name in enumerate(names)}
    return inputs, labels, weights


def run_size(mtl, keras, size, block_shape, rounds, steps):
    """Return {model name: fastest CPU seconds per training step} for one size."""
    models = {
        "dense": _model(mtl, keras, size, block_shape, "dense", "auto"),
        "block forms": _model(mtl, keras, size, block_shape, "hypergrid", False, False),
        "per-task kernels": _model(mtl, keras, size, block_shape, "hypergrid", "auto"),
        "compiled": _model(
            mtl, keras, size, block_shape, "hypergrid", "auto", forget_num_tasks=True
        ),
    }
    inputs, labels, weights = _batch(size)
    for model in models.values():
        model.train_on_batch(inputs, labels, sample_weight=weights)  # trace and warm up

    samples = {name: [] for name in models}
    for round_index in range(rounds):
        for name, model in models.items():
            start = time.process_time()
            for _ in range(steps):
                model.train_on_batch(inputs, labels, sample_weight=weights)
            samples[name].append((time.process_time() - start) / steps)
        logging.info("Size %s: round %d of %d done", size, round_index + 1, rounds)
    return {name: min(values) for name, values in samples.items()}


def main(argv):
    del argv
    import tensorflow as tf

    import mtl_layers as mtl
    from benchmarks import report
    from mtl_layers.compat import IS_KERAS_2, keras

    sizes, block_shape = (QUICK_SIZES, QUICK_BLOCK_SHAPE) if FLAGS.quick else (SIZES, BLOCK_SHAPE)
    rounds, steps = (2, 2) if FLAGS.quick else (FLAGS.rounds, FLAGS.steps)
    rows = [
        "| d_model | d_ff | tokens | batch | Dense model (CPU ms/step) "
        "| HyperGrid, block forms / Dense | HyperGrid, per-task kernels / Dense "
        "| HyperGrid, compiled / Dense |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for size in sizes:
        logging.info("Timing %s", size)
        times = run_size(mtl, keras, size, block_shape, rounds, steps)
        dense = times["dense"]
        d_model, d_ff, sequence_length, batch = size
        rows.append(
            f"| {d_model} | {d_ff} | {sequence_length} | {batch} | {1e3 * dense:.1f} "
            f"| {times['block forms'] / dense:.2f} | {times['per-task kernels'] / dense:.2f} "
            f"| {times['compiled'] / dense:.2f} |"
        )
        logging.info("%s: %s", size, rows[-1])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    mode = "Keras 2 (tf_keras)" if IS_KERAS_2 else "Keras 3"
    command = "python benchmarks/hypergrid_transformer.py" + (
        " --quick" if FLAGS.quick else " --write_docs"
    )
    if IS_KERAS_2:
        command = "TF_USE_LEGACY_KERAS=1 " + command
    section = "\n".join(
        [
            "## HyperGrid transformer training step",
            "",
            f"Command: `{command}` ({mode}) on {report.machine_description()} (1-minute load "
            f"average {load:.1f} at the end of the run), TensorFlow {tf.__version__}. "
            f"`train_on_batch` with Adam on one batch that mixes {NUM_TASKS} tasks, 2 encoder "
            f"blocks, {block_shape[0]}×{block_shape[1]} blocks, mode LG; fastest of {rounds} "
            f"rounds of {steps} steps, by process CPU time. Block forms: every "
            "`HyperGridDense` with `task_kernels=False` and `compiled_kernel=False`. Per-task "
            "kernels: the model as `hypergrid_transformer` builds it, which sorts the batch "
            "by task and forms one gated kernel per task. Compiled: every `HyperGridDense` "
            "with `num_tasks=None`, so that training calls run the compiled gated product.",
            "",
            *rows,
        ]
    )
    print(section)
    if FLAGS.write_docs:
        report.write_section(report.BENCHMARKS_PAGE, "hypergrid_transformer", section)


if __name__ == "__main__":
    app.run(main)
