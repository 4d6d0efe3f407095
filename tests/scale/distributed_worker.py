"""Train one small multi-task model with or without a `tf.distribute` strategy.

The distributed tests run this script in child processes, because logical CPU devices
and `TF_CONFIG` take effect only before TensorFlow starts. Every run trains with plain
SGD on the same global batches in the same order and writes the trained weights to
`--weights_dir` as `weight_0 ... weight_N` arrays of `.npz` files, so the parent test
compares distributed and single-process training weight by weight. The training history
of each run goes next to its weights as `<weights file stem>_history.json`, and the logs
that callbacks receive after each batch as `<weights file stem>_history_batches.json`.

    python tests/scale/distributed_worker.py --mode=mirrored --replicas=2 \
        --models=mmoe,ple --weights_dir=/tmp/weights

Modes:
    mirrored: `MirroredStrategy` over `--replicas` logical CPU devices. The same process
        first trains each model on one device (`<model>_single.npz`), then under the
        strategy from the same initial weights (`<model>_mirrored.npz`).
    multi_worker: `MultiWorkerMirroredStrategy`, one CPU per worker, the cluster taken
        from the `TF_CONFIG` environment variable. Each worker starts from
        `<model>_initial.npz` and writes `<model>_multi_worker_<task index>.npz`.
"""

import argparse
import json
import os
import pathlib
import sys

import numpy as np

MODELS = (
    "mmoe", "omoe", "shared_bottom", "ple", "mose", "hypergrid_transformer", "mmoe_raw",
    "tfrs", "tfrs_weighted", "tfrs_retrieval",
)  # fmt: skip
# The TFRS models also evaluate on the training data, and their histories are saved.
TFRS_MODELS = ("tfrs", "tfrs_weighted", "tfrs_retrieval")
MODES = ("mirrored", "multi_worker")
NUM_EXAMPLES = 64
GLOBAL_BATCH = 16
LEARNING_RATE = 0.05


def parse_arguments(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--models", required=True, help=f"comma-separated names from {MODELS}")
    parser.add_argument("--replicas", type=int, default=2, help="logical CPU devices (mirrored)")
    parser.add_argument(
        "--weights_dir", type=pathlib.Path, required=True,
        help="folder of the <model>_initial.npz files; the trained weights are written there",
    )  # fmt: skip
    parser.add_argument("--epochs", type=int, default=2)
    return parser.parse_args(argv)


def configure_devices(mode, replicas):
    """Split the CPU into logical devices; this must run before any TensorFlow op."""
    import tensorflow as tf

    if mode == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(replicas)]
        )


def make_strategy(mode, replicas):
    import tensorflow as tf

    if mode == "mirrored":
        devices = [f"/cpu:{index}" for index in range(replicas)]
        # NCCL is GPU-only; on CPU the replicas add their gradients with plain reductions.
        return tf.distribute.MirroredStrategy(
            devices, cross_device_ops=tf.distribute.ReductionToOneDevice()
        )
    if mode == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"Unknown mode {mode!r}; expected one of {MODES}.")


def _tasks():
    from mtl_layers.tasks import TaskSpec

    return [TaskSpec("click", kind="binary"), TaskSpec("rating", kind="regression")]


def build_model(name):
    """Return `(model, tasks)` for one builder on small synthetic inputs."""
    import mtl_layers as mtl
    from mtl_layers.compat import keras

    tasks = _tasks()
    if name in ("mmoe", "omoe"):
        builder = getattr(mtl.models, name)
        return builder(tasks, keras.Input((6,), name="x"), num_experts=3, expert_units=[8, 4]), tasks
    if name == "shared_bottom":
        return mtl.models.shared_bottom(tasks, keras.Input((6,), name="x"), bottom_units=(8,)), tasks
    if name == "ple":
        return (
            mtl.models.ple(tasks, keras.Input((6,), name="x"), num_levels=2, expert_units=4),
            tasks,
        )
    if name == "mose":
        return (
            mtl.models.mose(tasks, 3, num_experts=2, expert_units=4, bottom_units=6, output_steps="last"),
            tasks,
        )
    if name == "hypergrid_transformer":
        model = mtl.models.hypergrid_transformer(
            tasks, vocab_size=20, sequence_length=5, d_model=8, num_heads=2, d_ff=8,
            num_layers=1, block_shape=(4, 4), dropout=0.0,
        )  # fmt: skip
        return model, tasks
    # mmoe_raw and the TFRS models: raw string and numeric features with preprocessing in
    # the model.
    features = raw_feature_specs()
    if name == "mmoe_raw":
        return mtl.models.mmoe(tasks, features, num_experts=3, expert_units=4), tasks
    from mtl_layers.tasks import TaskSpec
    from mtl_layers.tfrs import MultiTaskModel, RetrievalSpec

    options = {"num_experts": 3, "expert_units": 4}
    if name == "tfrs":
        return MultiTaskModel(tasks, features, "mmoe", options), tasks
    if name == "tfrs_weighted":
        # Fixed and learned loss weights, and a weight penalty that every replica adds as
        # a layer loss, as kernel regularizers do. Shared-Bottom has no gates, whose expert
        # utilization averages differ when the replicas get batches of different sizes.
        tasks = [
            TaskSpec("click", kind="binary", loss_weight=2.0),
            TaskSpec("rating", kind="regression", loss_weight=0.5),
        ]
        model = MultiTaskModel(
            tasks, features, _shared_bottom_with_weight_penalty, {"bottom_units": (8,)},
            uncertainty_weighting=True,
        )  # fmt: skip
        return model, tasks
    if name == "tfrs_retrieval":
        retrieval = RetrievalSpec(query_features=("age",), candidate_features=("city",), embedding_dim=4)
        return MultiTaskModel(tasks, features, "mmoe", options, retrieval=retrieval), tasks
    raise ValueError(f"Unknown model {name!r}; expected one of {MODELS}.")


def _shared_bottom_with_weight_penalty(tasks, features, **options):
    """Build `mtl.models.shared_bottom` with an L2 penalty on its first kernel as a layer loss."""
    import tensorflow as tf

    import mtl_layers as mtl

    model = mtl.models.shared_bottom(tasks, features, **options)
    kernel = next(weight for weight in model.trainable_weights if "kernel" in weight.name)
    model.add_loss(lambda: 0.01 * tf.reduce_sum(tf.square(kernel)))
    return model


def raw_feature_specs():
    from mtl_layers.models import FeatureSpec

    return [
        FeatureSpec("age", "numeric", mean=40.0, variance=100.0),
        FeatureSpec("city", "categorical", vocabulary=("a", "b", "c"), embedding_dim=3),
    ]


def make_data(name):
    """Return `(features, labels)` NumPy dicts (or arrays) with NUM_EXAMPLES rows.

    For `tfrs_weighted`, return `(features, labels, sample_weights)` with fewer rows, so
    that the last global batch (7 rows) splits unevenly between two replicas.
    """
    rng = np.random.default_rng(7)
    labels = {
        "click": rng.integers(0, 2, size=(NUM_EXAMPLES, 1)).astype("float32"),
        "rating": rng.normal(size=(NUM_EXAMPLES, 1)).astype("float32"),
    }
    if name == "tfrs_weighted":
        count = NUM_EXAMPLES - GLOBAL_BATCH + 7
        features, _ = make_data("tfrs")
        features = {key: values[:count] for key, values in features.items()}
        labels = {key: values[:count] for key, values in labels.items()}
        sample_weights = {key: rng.uniform(0.0, 2.0, size=count).astype("float32") for key in labels}
        return features, labels, sample_weights
    if name in ("mmoe", "omoe", "shared_bottom", "ple"):
        features = rng.normal(size=(NUM_EXAMPLES, 6)).astype("float32")
    elif name == "mose":
        lengths = rng.integers(1, 5, size=NUM_EXAMPLES)
        features = {
            "sequence": rng.normal(size=(NUM_EXAMPLES, 4, 3)).astype("float32"),
            "mask": np.arange(4)[None, :] < lengths[:, None],
        }
    elif name == "hypergrid_transformer":
        features = {
            "token_ids": rng.integers(0, 20, size=(NUM_EXAMPLES, 5)).astype("int32"),
            "task_id": rng.integers(0, 2, size=(NUM_EXAMPLES,)).astype("int32"),
        }
    else:
        features = {
            "age": rng.uniform(20, 60, size=NUM_EXAMPLES).astype("float32"),
            "city": rng.choice(np.array(["a", "b", "c", "d"]), size=NUM_EXAMPLES),
        }
    return features, labels


def make_dataset(*arrays):
    """Return the global batches in a fixed order; a strategy splits each across replicas."""
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices(arrays).batch(GLOBAL_BATCH)
    options = tf.data.Options()
    # DATA sharding splits every global batch between the workers, so the workers together
    # see exactly the batches of single-process training.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def compile_model(model, name, tasks):
    import mtl_layers as mtl
    from mtl_layers.compat import keras

    optimizer = keras.optimizers.SGD(LEARNING_RATE)
    if name in TFRS_MODELS:
        model.compile(optimizer=optimizer)
    else:
        mtl.tasks.compile_for_tasks(model, tasks, optimizer=optimizer)


def save_weights(path, weights):
    np.savez(path, **{f"weight_{index}": value for index, value in enumerate(weights)})


def load_weights(path):
    with np.load(path) as archive:
        return [archive[f"weight_{index}"] for index in range(len(archive.files))]


def save_history(path, history):
    values = {name: [float(value) for value in values] for name, values in history.items()}
    path.write_text(json.dumps(values, indent=1, sort_keys=True), encoding="utf-8")


def load_history(path):
    return json.loads(path.read_text(encoding="utf-8"))


def batch_history_path(history_path):
    """Return the file of the per-batch logs that go next to the history at `history_path`."""
    return history_path.with_name(history_path.stem + "_batches.json")


def train(model_name, strategy, initial_weights, epochs, history_path=None):
    """Build `model_name` under `strategy`, start from `initial_weights`, train, return weights.

    With `initial_weights=None` the model keeps its fresh weights, and the function returns
    `(initial, trained)` so that the caller can start other runs from the same point. With
    `history_path`, the training history goes there as JSON, and the logs that callbacks
    receive after each batch go to `batch_history_path(history_path)`.
    """
    from mtl_layers.compat import keras

    with strategy.scope():
        model, tasks = build_model(model_name)
        compile_model(model, model_name, tasks)
    initial = model.get_weights()
    if initial_weights is not None:
        model.set_weights(initial_weights)
        initial = initial_weights
    dataset = make_dataset(*make_data(model_name))
    validation = dataset if model_name in TFRS_MODELS else None
    batch_logs = {}

    def record_batch_logs(batch, logs):
        for name, value in logs.items():
            batch_logs.setdefault(name, []).append(value)

    history = model.fit(
        dataset, validation_data=validation, epochs=epochs, verbose=0, shuffle=False,
        callbacks=[keras.callbacks.LambdaCallback(on_train_batch_end=record_batch_logs)],
    )  # fmt: skip
    if history_path is not None:
        save_history(history_path, history.history)
        save_history(batch_history_path(history_path), batch_logs)
    losses = np.asarray(history.history["loss"], dtype="float64")
    if not np.isfinite(losses).all():
        raise RuntimeError(f"{model_name}: training produced a non-finite loss: {losses.tolist()}")
    print(
        f"{model_name}: {strategy.num_replicas_in_sync} replicas, losses {losses.round(6).tolist()}",
        flush=True,
    )
    # The TFRS model's weights include its loss trackers' totals and counts, which add up
    # over the replicas. Their results are in the history, so zero them for the comparison.
    model.reset_metrics()
    return initial, model.get_weights()


def main(argv):
    arguments = parse_arguments(argv)
    configure_devices(arguments.mode, arguments.replicas)
    import tensorflow as tf

    from mtl_layers.compat import keras

    strategy = make_strategy(arguments.mode, arguments.replicas)
    failures = []
    for model_name in arguments.models.split(","):
        keras.utils.set_random_seed(0)
        initial_path = arguments.weights_dir / f"{model_name}_initial.npz"
        initial = load_weights(initial_path) if initial_path.exists() else None
        if arguments.mode == "mirrored":
            # The single-device reference runs in this process too, on the first device.
            initial, trained = train(
                model_name, tf.distribute.get_strategy(), initial, arguments.epochs,
                history_path=arguments.weights_dir / f"{model_name}_single_history.json",
            )  # fmt: skip
            save_weights(arguments.weights_dir / f"{model_name}_single.npz", trained)
        elif initial is None:
            raise FileNotFoundError(
                f"Initial weights not found: {initial_path}. Every worker must start from "
                "the same weights, so the launching test writes them first."
            )
        suffix = arguments.mode
        if arguments.mode == "multi_worker":
            suffix += f"_{strategy.cluster_resolver.task_id}"
        history_path = arguments.weights_dir / f"{model_name}_{suffix}_history.json"
        try:
            _, trained = train(model_name, strategy, initial, arguments.epochs, history_path)
        except Exception as error:  # Report every failing model, not only the first one.
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            failures.append(f"{model_name}: {type(error).__name__}: {first_line}")
            continue
        save_weights(arguments.weights_dir / f"{model_name}_{suffix}.npz", trained)
    for failure in failures:
        print(f"FAILED {failure}", file=sys.stderr, flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main(sys.argv[1:]))
