"""Train a multi-task model on census data, print per-task test AUC, export a SavedModel.

The main job of mtl_layers. With the defaults it trains MMoE (8 experts of 16 units,
towers of 8, Adam with learning rate 1e-3, batch 512, 20 epochs) on UCI Adult, which
ships inside the package, for the MMoE paper's first task group (income above 50K,
never married; marital status is not an input), evaluates on the official test split
and exports the model for TF Serving:

    python examples/census_income.py

Census-Income (KDD) is read from a folder (or downloaded with --download):

    python examples/census_income.py --dataset=kdd --data_dir=path/to/census-income-kdd

--strategy trains under a `tf.distribute` strategy, in Keras 2 mode; docs/distributed.md
shows a two-worker launch:

    TF_USE_LEGACY_KERAS=1 python examples/census_income.py --strategy=mirrored --cpu_devices=2
"""

import json
import os
import pathlib
import sys
import tempfile
import time

from absl import app, flags, logging

# The shared flag checks sit next to this script. Python puts the script's folder on the
# path when it runs the script, but not when another program imports the file.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import example_flags  # noqa: E402

flags.DEFINE_enum("dataset", "adult", ["adult", "kdd"], "Census data set to train on.")
flags.DEFINE_integer(
    "task_group",
    1,
    "1: income and never married; 2: college education and never married.",
    lower_bound=1,
    upper_bound=2,
)
flags.DEFINE_enum("model", "mmoe", ["mmoe", "omoe", "shared_bottom", "ple"], "Model architecture.")
flags.DEFINE_string(
    "data_dir",
    None,
    "Folder with the data files, passed to the loader as it is. When it is set, only DIR "
    "and DIR/uci-adult (Adult) or DIR/census-income-kdd (KDD) are searched; with "
    "--download, missing files are downloaded into the cache. Without it, Adult comes from "
    "the copy in the package, and KDD from $MTL_LAYERS_DATA_DIR, then the download cache.",
)
flags.DEFINE_bool("download", False, "Download missing data files from the UCI repository.")
flags.DEFINE_integer("epochs", 20, "Training epochs.", lower_bound=1)
flags.DEFINE_integer("batch_size", 512, "Examples per training batch.", lower_bound=1)
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.")
flags.DEFINE_integer(
    "num_experts", 8, "Experts of MMoE and OMoE; per task and shared for PLE.", lower_bound=1
)
flags.DEFINE_integer("expert_units", 16, "Units of each expert.", lower_bound=1)
flags.DEFINE_integer("tower_units", 8, "Units of each task tower's hidden layer.", lower_bound=1)
flags.DEFINE_integer("bottom_units", 128, "Units of the Shared-Bottom model's shared layer.", lower_bound=1)
flags.DEFINE_integer("embedding_dim", 4, "Embedding size of the categorical features.", lower_bound=1)
flags.DEFINE_integer(
    "steps_per_execution", 8, "Training steps run per call into TensorFlow.", lower_bound=1
)
flags.DEFINE_integer(
    "seed",
    0,
    "Random seed of weights, shuffling and the validation split.",
    lower_bound=0,
    upper_bound=2**32 - 1,  # NumPy's global seed, which Keras sets, must fit in 32 bits.
)
flags.DEFINE_integer(
    "max_examples", None, "Use at most this many training examples (quick runs).", lower_bound=1
)
flags.DEFINE_string(
    "export_dir",
    "exports/census",
    "Base folder of the versioned SavedModels, created when missing; empty to skip. A new "
    "version never replaces an existing one.",
)
flags.DEFINE_string("metrics_json", None, "Also write the test metrics to this JSON file.")
flags.DEFINE_string("keras_model_path", None, "Also save the trained model to this file, whose name ends in .keras.")
flags.DEFINE_bool(
    "overwrite",
    False,
    "Replace existing --metrics_json and --keras_model_path files. Without it the script "
    "stops before training when either file exists.",
)
flags.DEFINE_enum(
    "strategy",
    "default",
    ["default", "mirrored", "multi_worker_mirrored"],
    "tf.distribute strategy: default (one device), mirrored (every local GPU, or the logical "
    "CPUs of --cpu_devices) or multi_worker_mirrored (the cluster in the TF_CONFIG "
    "environment variable). --batch_size is the global batch, split across replicas.",
)
flags.DEFINE_integer(
    "cpu_devices",
    0,
    "With --strategy=mirrored, split the CPU into this many logical devices (0: no split).",
    lower_bound=0,
)
example_flags.require_number("learning_rate", 0.0, include_low=False)


@flags.multi_flags_validator(
    ["cpu_devices", "strategy"],
    message="--cpu_devices applies only to --strategy=mirrored. Pass --strategy=mirrored or drop --cpu_devices.",
)
def _cpu_devices_need_mirrored(values):
    return not values["cpu_devices"] or values["strategy"] == "mirrored"


FLAGS = flags.FLAGS


def build_model(data, model_name: str):
    """Build the chosen architecture for the data set's tasks and raw features."""
    import mtl_layers as mtl

    if model_name == "mmoe":
        return mtl.models.mmoe(
            data.tasks, data.feature_specs, num_experts=FLAGS.num_experts, expert_units=FLAGS.expert_units
        )
    if model_name == "omoe":
        return mtl.models.omoe(
            data.tasks, data.feature_specs, num_experts=FLAGS.num_experts, expert_units=FLAGS.expert_units
        )
    if model_name == "shared_bottom":
        return mtl.models.shared_bottom(data.tasks, data.feature_specs, bottom_units=(FLAGS.bottom_units,))
    return mtl.models.ple(
        data.tasks,
        data.feature_specs,
        num_task_experts=max(1, FLAGS.num_experts // 2),
        num_shared_experts=max(1, FLAGS.num_experts // 2),
        expert_units=FLAGS.expert_units,
    )


def load_data():
    """Load the census data set chosen by the flags."""
    from mtl_layers.datasets import census

    tower_units = (FLAGS.tower_units,)
    if FLAGS.dataset == "adult":
        return census.load_adult(
            task_group=FLAGS.task_group,
            seed=FLAGS.seed,
            data_dir=FLAGS.data_dir,
            download=FLAGS.download,
            embedding_dim=FLAGS.embedding_dim,
            tower_units=tower_units,
        )
    return census.load_census_kdd(
        task_group=FLAGS.task_group,
        data_dir=FLAGS.data_dir,
        download=FLAGS.download,
        seed=FLAGS.seed,
        embedding_dim=FLAGS.embedding_dim,
        tower_units=tower_units,
    )


def truncate(split, limit):
    """Return `split` with at most `limit` examples (the first ones)."""
    from mtl_layers.datasets.census import Split

    if limit is None or limit >= len(split):
        return split
    return Split(
        features={name: values[:limit] for name, values in split.features.items()},
        labels={name: values[:limit] for name, values in split.labels.items()},
    )


def make_strategy():
    """Create the `tf.distribute` strategy chosen by --strategy, before any other TF op."""
    import tensorflow as tf

    from mtl_layers.compat import IS_KERAS_2

    if FLAGS.strategy != "default" and not IS_KERAS_2:
        # Keras 3.15 averages the first input batch across replicas before it builds the
        # model (TensorFlowTrainer._maybe_symbolic_build). That fails for the string features
        # here and, across workers, for every input; tf_keras has no such step.
        raise app.UsageError(
            f"--strategy={FLAGS.strategy} needs Keras 2 mode: Keras 3.15 cannot fit this "
            "model, whose inputs include strings, under a tf.distribute strategy. Set "
            "TF_USE_LEGACY_KERAS=1 (with tf-keras installed) and run again."
        )
    if FLAGS.strategy == "mirrored":
        if FLAGS.cpu_devices:
            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * FLAGS.cpu_devices
            )
            devices = [f"/cpu:{index}" for index in range(FLAGS.cpu_devices)]
            # NCCL, the default all-reduce, works only between GPUs.
            return tf.distribute.MirroredStrategy(
                devices, cross_device_ops=tf.distribute.ReductionToOneDevice()
            )
        return tf.distribute.MirroredStrategy()
    if FLAGS.strategy == "multi_worker_mirrored":
        if "TF_CONFIG" not in os.environ:
            raise app.UsageError(
                "--strategy=multi_worker_mirrored reads the cluster from the TF_CONFIG "
                "environment variable, which is not set. See docs/distributed.md."
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief(strategy) -> bool:
    """Return True unless this process is a multi-worker worker other than worker 0."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0)


def unsharded(dataset):
    """Return `dataset` with auto-sharding off, so every worker reads all of it."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return dataset.with_options(options)


def predict_test_split(model, strategy, split):
    """Return the model's outputs on every example of `split`, as NumPy arrays per task.

    Under MultiWorkerMirroredStrategy, `model.predict` splits each batch across the workers
    and gathers the outputs, which fails when the last batch does not split evenly. There
    every worker calls the model on the whole split itself instead, so each one can
    compute the AUC.
    """
    import numpy as np
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return model.predict(unsharded(split.to_dataset(4096)), verbose=0)
    batches = [model(features, training=False) for features, _ in split.to_dataset(4096)]
    return {name: np.concatenate([np.asarray(batch[name]) for batch in batches]) for name in batches[0]}


def check_output_paths():
    """Raise `app.UsageError` unless every output path can be written, before any training."""
    example_flags.check_all(
        lambda: example_flags.check_output_file("metrics_json", overwrite=FLAGS.overwrite),
        lambda: example_flags.check_output_file(
            "keras_model_path", suffix=".keras", overwrite=FLAGS.overwrite
        ),
        lambda: example_flags.check_export_folder("export_dir"),
    )


def main(argv):
    del argv
    # Under multi_worker_mirrored only worker 0 writes the outputs, and which process that
    # is becomes known once the strategy has read TF_CONFIG.
    if FLAGS.strategy != "multi_worker_mirrored":
        check_output_paths()
    strategy = make_strategy()
    if FLAGS.strategy == "multi_worker_mirrored" and is_chief(strategy):
        check_output_paths()
    import mtl_layers as mtl
    from mtl_layers.compat import keras

    keras.utils.set_random_seed(FLAGS.seed)
    data = load_data()
    train = truncate(data.train, FLAGS.max_examples)
    logging.info(
        "%s: %d train, %d validation, %d test examples. %s",
        data.name, len(train), len(data.validation), len(data.test), data.description,
    )  # fmt: skip

    with strategy.scope():
        model = build_model(data, FLAGS.model)
        mtl.tasks.compile_for_tasks(
            model,
            data.tasks,
            optimizer=keras.optimizers.Adam(FLAGS.learning_rate),
            steps_per_execution=FLAGS.steps_per_execution,
        )
    logging.info(
        "%s: %d parameters, %d replicas (%s strategy)",
        FLAGS.model, model.count_params(), strategy.num_replicas_in_sync, FLAGS.strategy,
    )  # fmt: skip

    started = time.perf_counter()
    try:
        history = model.fit(
            train.to_dataset(FLAGS.batch_size, shuffle=True, seed=FLAGS.seed),
            # Sharded like the training set: each worker evaluates its part, and the
            # metrics add up across workers to those of one process.
            validation_data=data.validation.to_dataset(4096),
            epochs=FLAGS.epochs,
            shuffle=False,  # to_dataset(shuffle=True) already shuffles every epoch
            verbose=0,
            callbacks=[
                mtl.callbacks.StopOnNonFiniteLoss(),
                mtl.callbacks.ExpertUtilization(),
                mtl.callbacks.EpochLogger(FLAGS.epochs),
            ],
        )
    except mtl.callbacks.NonFiniteLossError as error:
        logging.error("Training stopped: %s", error)
        sys.exit(1)
    seconds = time.perf_counter() - started
    logging.info(
        "Trained in %.1f s (%.0f examples/s)", seconds, FLAGS.epochs * len(train) / seconds
    )

    predictions = predict_test_split(model, strategy, data.test)
    results = {
        task.name: mtl.evaluation.roc_auc(data.test.labels[task.name], predictions[task.name])
        for task in data.tasks
    }
    print(f"\nTest AUC ({data.name}, task group {FLAGS.task_group}, {FLAGS.model}, seed {FLAGS.seed})")
    print(f"| {'task':<18} | {'AUC':>6} |")
    print(f"|{'-' * 20}|{'-' * 8}|")
    for task_name, auc in results.items():
        print(f"| {task_name:<18} | {auc:.4f} |")

    if not is_chief(strategy):
        # Saving under MultiWorkerMirroredStrategy runs collective ops, so every worker must
        # save too. The other workers save into a temporary folder that is then deleted, so
        # that only worker 0 writes files and workers never overwrite each other's output.
        with tempfile.TemporaryDirectory(prefix="census_worker_") as scratch:
            if FLAGS.keras_model_path:
                model.save(os.path.join(scratch, "model.keras"))
            if FLAGS.export_dir:
                # The same call as worker 0's, warm-up records included.
                mtl.export.export_saved_model(
                    model, os.path.join(scratch, "export"), warmup_examples=data.test.features
                )
        return
    if FLAGS.metrics_json:
        with open(FLAGS.metrics_json, "w", encoding="utf-8") as stream:
            json.dump(
                {
                    "auc": results,
                    "train_seconds": seconds,
                    "params": model.count_params(),
                    "replicas": strategy.num_replicas_in_sync,
                    "history": {key: [float(v) for v in values] for key, values in history.history.items()},
                },
                stream,
            )
        logging.info("Test metrics written to %s", FLAGS.metrics_json)
    if FLAGS.keras_model_path:
        model.save(FLAGS.keras_model_path)
        logging.info("Keras model written to %s", FLAGS.keras_model_path)
    if FLAGS.export_dir:
        # A few real test rows become TF Serving warm-up requests.
        path = mtl.export.export_saved_model(
            model, FLAGS.export_dir, warmup_examples=data.test.features
        )
        print(f"\nSavedModel written to {path}")

if __name__ == "__main__":
    example_flags.run(main)
