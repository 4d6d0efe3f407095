"""Run one task of a `ParameterServerStrategy` cluster for `parameter_server_test.py`.

Every task reads the cluster and its own role from the `TF_CONFIG` environment variable.

    TF_CONFIG=... python tests/scale/parameter_server_worker.py --role=server
    TF_CONFIG=... TF_USE_LEGACY_KERAS=1 python tests/scale/parameter_server_worker.py \
        --role=chief --result=/tmp/result.json

Roles:
    server: a worker or parameter server. It starts a `tf.distribute.Server` and serves
        until the launching test kills it.
    chief: the coordinator. It builds MMoE on raw string and numeric `FeatureSpec`s
        under `ParameterServerStrategy`, with a `MinSizePartitioner` that splits only the
        large item embedding table, trains it with `model.fit` on a `DatasetCreator`, and
        writes what the test checks to `--result` as JSON.
"""

import argparse
import json
import os
import pathlib
import sys

import numpy as np

NUM_EXAMPLES = 512
GLOBAL_BATCH = 64
EPOCHS = 4
STEPS_PER_EPOCH = NUM_EXAMPLES // GLOBAL_BATCH
LEARNING_RATE = 0.05
# The item table has (NUM_ITEMS + 1) * ITEM_EMBEDDING_DIM float32 values (about 63 KiB),
# far more than any other weight of the model. The largest of those, the first expert
# kernel, has 17 * 3 * 16 values (about 3 KiB).
NUM_ITEMS = 1000
ITEM_EMBEDDING_DIM = 16
# A variable is split only when it has at least twice this many bytes, so only the item
# table is split.
MIN_SHARD_BYTES = 16 << 10
# The test cluster has one parameter server, and `MinSizePartitioner` never makes more
# shards than `max_shards`, so a limit of the number of servers would leave the table
# whole. Two shards on one server still exercise the sharded-variable path.
MAX_SHARDS = 2


def parse_arguments(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=("server", "chief"), required=True)
    parser.add_argument("--result", type=pathlib.Path, help="JSON file the chief writes (chief only)")
    arguments = parser.parse_args(argv)
    if arguments.role == "chief" and arguments.result is None:
        parser.error("--role=chief needs --result")
    return arguments


def serve():
    """Start this task's server and block until the launching test kills the process."""
    import tensorflow as tf

    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    server = tf.distribute.Server(
        resolver.cluster_spec(),
        job_name=resolver.task_type,
        task_index=resolver.task_id,
        protocol="grpc",
        start=True,
    )
    print(f"serving {resolver.task_type}:{resolver.task_id} at {server.target}", flush=True)
    server.join()


def feature_specs():
    from mtl_layers.models import FeatureSpec

    items = tuple(f"item_{index}" for index in range(NUM_ITEMS))
    return [
        FeatureSpec("age", "numeric", mean=40.0, variance=100.0),
        FeatureSpec("item", "categorical", vocabulary=items, embedding_dim=ITEM_EMBEDDING_DIM),
    ]


def make_data():
    """Return `(features, labels)`: both labels depend on the age, so the loss can fall."""
    rng = np.random.default_rng(11)
    age = rng.uniform(20, 60, size=NUM_EXAMPLES).astype("float32")
    item = np.array([f"item_{index}" for index in rng.integers(0, NUM_ITEMS, size=NUM_EXAMPLES)])
    labels = {
        "click": (age > 40).astype("float32")[:, None],
        "rating": ((age - 40.0) / 10.0).astype("float32")[:, None],
    }
    return {"age": age, "item": item}, labels


def dataset_fn(input_context):
    """Build one worker's input pipeline: its shard of the data, in per-worker batches."""
    import tensorflow as tf

    features, labels = make_data()
    batch_size = input_context.get_per_replica_batch_size(GLOBAL_BATCH)
    dataset = tf.data.Dataset.from_tensor_slices((features, labels))
    dataset = dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    return dataset.shuffle(NUM_EXAMPLES, seed=input_context.input_pipeline_id).batch(batch_size).repeat()


def mean_loss(model, tasks, features, labels):
    """Return the sum of the task losses on all rows, computed on the chief."""
    from mtl_layers.compat import keras

    predictions = model(features, training=False)
    total = 0.0
    for task in tasks:
        loss = keras.losses.get(task.loss())
        total += float(np.mean(loss(labels[task.name], predictions[task.name])))
    return total


def describe_variable(variable):
    shards = getattr(variable, "variables", None)
    return {
        "name": variable.name,
        "type": type(variable).__name__,
        "shape": [int(dim) for dim in variable.shape],
        "shard_devices": [shard.device for shard in shards] if shards is not None else [variable.device],
    }


def train_chief(result_path):
    import tensorflow as tf

    import mtl_layers as mtl
    from mtl_layers.compat import IS_KERAS_2, keras
    from mtl_layers.tasks import TaskSpec

    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    strategy = tf.distribute.ParameterServerStrategy(
        resolver,
        variable_partitioner=tf.distribute.experimental.partitioners.MinSizePartitioner(
            min_shard_bytes=MIN_SHARD_BYTES, max_shards=MAX_SHARDS
        ),
    )
    keras.utils.set_random_seed(0)
    tasks = [TaskSpec("click", kind="binary"), TaskSpec("rating", kind="regression")]
    with strategy.scope():
        model = mtl.models.mmoe(tasks, feature_specs(), num_experts=3, expert_units=[16, 8])
        mtl.tasks.compile_for_tasks(
            model, tasks, optimizer=keras.optimizers.SGD(LEARNING_RATE), steps_per_execution=2
        )

    embedding = model.get_layer("item_embedding").embeddings
    features, labels = make_data()
    initial_embedding = tf.convert_to_tensor(embedding).numpy()
    loss_before = mean_loss(model, tasks, features, labels)

    history = model.fit(
        keras.utils.experimental.DatasetCreator(dataset_fn),
        epochs=EPOCHS,
        steps_per_epoch=STEPS_PER_EPOCH,
        verbose=0,
    )

    loss_after = mean_loss(model, tasks, features, labels)
    trained_embedding = tf.convert_to_tensor(embedding).numpy()
    weights = model.get_weights()
    # `model.weights` lists the table's shards, not the `ShardedVariable` itself.
    shards = getattr(embedding, "variables", [embedding])
    others = [v for v in model.weights if not any(v is shard for shard in shards)]
    result = {
        "keras_2": IS_KERAS_2,
        "cluster": resolver.cluster_spec().as_dict(),
        "item_embedding": describe_variable(embedding),
        "other_variables": [describe_variable(variable) for variable in others],
        "history_loss": [float(value) for value in history.history["loss"]],
        "loss_before": loss_before,
        "loss_after": loss_after,
        "all_weights_finite": bool(all(np.isfinite(w).all() for w in weights)),
        "embedding_rows_changed": int(np.any(initial_embedding != trained_embedding, axis=1).sum()),
    }
    result_path.write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(f"losses {result['history_loss']}, before {loss_before:.4f}, after {loss_after:.4f}", flush=True)


def main(argv):
    arguments = parse_arguments(argv)
    if arguments.role == "server":
        serve()
    else:
        train_chief(arguments.result)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main(sys.argv[1:]))
