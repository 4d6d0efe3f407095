"""Measure the latency of exported multi-task models through their SavedModel signatures.

Each model is exported with `mtl_layers.export.export_saved_model`, reloaded with
`tf.saved_model.load` and called through `serving_default` with real examples at several
batch sizes, one caller at a time and with concurrent callers (threads). Latency does not
depend on the weights, so the models are not trained. Models:

* census MMoE: UCI Adult features, 8 experts of 16 units, towers of 8 (the defaults of
  `examples/census_income.py`);
* MovieLens MMoE: MovieLens 100K user and movie features, 4 experts of 32 units (the
  ranking part of `examples/movielens_multitask.py`);
* for each, a plain MLP with the same raw inputs and preprocessing and one hidden layer
  sized so that its dense multiply-adds per example equal the MMoE's.

    python benchmarks/serving_latency.py                 # writes docs/benchmarks.md
    python benchmarks/serving_latency.py --quick --page=/tmp/page.md
"""

import os
import pathlib
import sys
import tempfile
import threading
import time

from absl import app, flags, logging

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

flags.DEFINE_list("batch_sizes", ["1", "32", "1024"], "Batch sizes to measure.")
flags.DEFINE_integer("calls", 1000, "Timed calls per model, batch size and caller count.")
flags.DEFINE_integer("warmup_calls", 50, "Untimed calls before each measurement.")
flags.DEFINE_integer("concurrent_callers", 8, "Threads that call the signature at the same time.")
flags.DEFINE_string("data_dir", None, "Folder with movielens-100k/; defaults to $MTL_LAYERS_DATA_DIR. Without MovieLens only census models run.")
flags.DEFINE_bool("quick", False, "Smoke run: 20 calls per measurement, batch sizes 1 and 32.")
flags.DEFINE_string("page", None, "Markdown page whose serving_latency section is replaced; defaults to docs/benchmarks.md.")

FLAGS = flags.FLAGS
SECTION = "serving_latency"
P50_RATIO_TARGET = 1.5
CENSUS_P50_TARGET_MS = 1.0


def dense_flops(model) -> int:
    """Return 2 x the multiply-adds per example of the model's dense kernels.

    Every trainable weight of rank >= 2 other than an embedding table is a kernel whose
    size is its multiply-adds per example (Dense, ExpertBank and TaskGate kernels).
    Lookups, normalisation, activations and softmax are not counted, so this is an
    estimate of the matrix-multiply work only.
    """
    total = 0
    for weight in model.trainable_weights:
        if len(weight.shape) >= 2 and "embedding" not in weight.name:
            size = 1
            for dimension in weight.shape:
                size *= int(dimension)
            total += size
    return 2 * total


def equal_flops_mlp(feature_specs, tasks, target_flops: int, name: str):
    """Build a one-hidden-layer MLP over the same raw inputs with about `target_flops`."""
    from mtl_layers.compat import keras
    from mtl_layers.models import build_feature_inputs, task_tower
    from mtl_layers.tasks import TaskSpec

    inputs, encoded = build_feature_inputs(feature_specs)
    encoded_dim = int(encoded.shape[-1])
    output_units = sum(task.output_units for task in tasks)
    hidden_units = max(1, round(target_flops / (2 * (encoded_dim + output_units))))
    hidden = keras.layers.Dense(hidden_units, activation="relu", name="hidden")(encoded)
    outputs = {
        task.name: task_tower(TaskSpec(task.name, kind=task.kind, num_classes=task.num_classes, tower_units=()), hidden)
        for task in tasks
    }
    return keras.Model(inputs, outputs, name=name)


def measure(signature, inputs, calls: int, warmup_calls: int, callers: int):
    """Return (p50, p99) latency in milliseconds of `signature(**inputs)`."""
    import numpy as np

    for _ in range(warmup_calls):
        signature(**inputs)
    latencies = [[] for _ in range(callers)]

    def run(index):
        per_caller = max(1, calls // callers)
        for _ in range(per_caller):
            started = time.perf_counter()
            signature(**inputs)
            latencies[index].append(time.perf_counter() - started)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    values = np.concatenate([np.array(values) for values in latencies]) * 1000.0
    return float(np.percentile(values, 50)), float(np.percentile(values, 99))


def batch_inputs(features, batch_size):
    """Return the first `batch_size` examples as tensors, repeating rows if needed."""
    import numpy as np
    import tensorflow as tf

    count = len(next(iter(features.values())))
    rows = np.arange(batch_size) % count
    return {name: tf.constant(np.asarray(values)[rows]) for name, values in features.items()}


def candidate_models(data_dir):
    """Yield (label, model, test features) for every model to measure."""
    import mtl_layers as mtl
    from mtl_layers.compat import keras
    from mtl_layers.datasets import census

    keras.utils.set_random_seed(0)
    adult = census.load_adult()
    mmoe = mtl.models.mmoe(adult.tasks, adult.feature_specs, num_experts=8, expert_units=16, name="census_mmoe")
    mlp = equal_flops_mlp(adult.feature_specs, adult.tasks, dense_flops(mmoe), "census_mlp")
    yield "census MMoE", mmoe, adult.test.features
    yield "census MLP (equal FLOPs)", mlp, adult.test.features

    from mtl_layers.tfrs import movielens_data

    try:
        movielens = movielens_data.load_movielens_ratings(data_dir=data_dir, embedding_dim=16)
    except FileNotFoundError as error:
        logging.warning("Skipping the MovieLens models: %s", error)
        return
    mmoe = mtl.models.mmoe(
        movielens.tasks, movielens.feature_specs, num_experts=4, expert_units=32, name="movielens_mmoe"
    )
    mlp = equal_flops_mlp(movielens.feature_specs, movielens.tasks, dense_flops(mmoe), "movielens_mlp")
    yield "MovieLens MMoE", mmoe, movielens.test.features
    yield "MovieLens MLP (equal FLOPs)", mlp, movielens.test.features


def main(argv):
    del argv
    import tensorflow as tf

    import mtl_layers as mtl
    from benchmarks import report
    from mtl_layers.compat import IS_KERAS_2

    batch_sizes = [1, 32] if FLAGS.quick else [int(size) for size in FLAGS.batch_sizes]
    calls = 20 if FLAGS.quick else FLAGS.calls
    warmup_calls = 5 if FLAGS.quick else FLAGS.warmup_calls
    caller_counts = [1, FLAGS.concurrent_callers]

    rows = []
    p50_batch1 = {}
    with tempfile.TemporaryDirectory(prefix="serving_latency_") as export_root:
        for label, model, features in candidate_models(FLAGS.data_dir):
            path = mtl.export.export_saved_model(
                model,
                os.path.join(export_root, model.name),
                warmup_examples={name: values[:8] for name, values in features.items()},
            )
            signature = tf.saved_model.load(str(path)).signatures["serving_default"]
            flops = dense_flops(model)
            for batch_size in batch_sizes:
                inputs = batch_inputs(features, batch_size)
                for callers in caller_counts:
                    p50, p99 = measure(signature, inputs, calls, warmup_calls, callers)
                    logging.info(
                        "%s batch %d, %d callers: p50 %.3f ms, p99 %.3f ms",
                        label, batch_size, callers, p50, p99,
                    )  # fmt: skip
                    rows.append((label, flops, batch_size, callers, p50, p99))
                    if batch_size == 1 and callers == 1:
                        p50_batch1[label] = p50

    lines = [
        "## Serving latency of exported SavedModels",
        "",
        f"`python benchmarks/serving_latency.py{' --quick' if FLAGS.quick else ''}` on "
        f"{report.machine_description()}, {'tf_keras (Keras 2)' if IS_KERAS_2 else 'Keras 3'}, "
        f"TensorFlow {tf.__version__}. Each model is exported with `export_saved_model`, "
        "reloaded with `tf.saved_model.load` and called through `serving_default` with real "
        f"test examples: {warmup_calls} untimed calls, then {calls} timed calls per row, split "
        "over the callers (threads). Untrained weights; FLOPs count 2 x the dense multiply-adds "
        "per example (no lookups or activations).",
        "",
        "| model | FLOPs/example | batch | callers | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, flops, batch_size, callers, p50, p99 in rows:
        lines.append(f"| {label} | {flops:,} | {batch_size} | {callers} | {p50:.3f} | {p99:.3f} |")

    lines += ["", "Targets at batch 1, one caller:", ""]
    for name in ("census", "MovieLens"):
        mmoe, mlp = p50_batch1.get(f"{name} MMoE"), p50_batch1.get(f"{name} MLP (equal FLOPs)")
        if mmoe is None or mlp is None:
            continue
        ratio = mmoe / mlp
        verdict = "met" if ratio <= P50_RATIO_TARGET else "missed"
        lines.append(f"- {name} MMoE p50 / MLP p50 = {ratio:.2f} (target <= {P50_RATIO_TARGET}: {verdict}).")
    if "census MMoE" in p50_batch1:
        census_p50 = p50_batch1["census MMoE"]
        verdict = "met" if census_p50 <= CENSUS_P50_TARGET_MS else "missed"
        lines.append(f"- census MMoE p50 = {census_p50:.3f} ms (target <= {CENSUS_P50_TARGET_MS} ms: {verdict}).")
    markdown = "\n".join(lines)
    print(markdown)
    page = pathlib.Path(FLAGS.page) if FLAGS.page else report.BENCHMARKS_PAGE
    report.write_section(page, SECTION, markdown)
    logging.info("Wrote the %s section of %s", SECTION, page)


if __name__ == "__main__":
    app.run(main)
