"""Train multi-task TensorFlow Recommenders models on MovieLens 100K and compare them.

Tasks: the rating (regression, RMSE) and "rated at least 4" (binary, AUC), with an
optional two-tower retrieval task (top-k recall). Raw user and movie features go through
Keras preprocessing layers inside each model. The models share one seeded random split:

* `mmoe`: MMoE over all user and movie features.
* `shared_bottom`: Shared-Bottom over the same features.
* `tutorial_joint`: the plain joint model of the TFRS multi-task tutorial: 32-dimensional
  user id and movie id embeddings, a shared 256-128 ReLU MLP and one linear output per
  task (no per-task tower).

TensorFlow Recommenders needs Keras 2, so the script sets `TF_USE_LEGACY_KERAS=1` unless
the environment sets it. The data come from `--data_dir`, `$MTL_LAYERS_DATA_DIR` or a
GroupLens download (`--download`):

    python examples/movielens_multitask.py --data_dir=../shared/data --retrieval
    python examples/movielens_multitask.py --quick   # a smoke run in under a minute
"""

import dataclasses
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from absl import flags, logging  # noqa: E402

# The shared flag checks sit next to this script. Python puts the script's folder on the
# path when it runs the script, but not when another program imports the file.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import example_flags  # noqa: E402

MODELS = ("mmoe", "shared_bottom", "tutorial_joint")

flags.DEFINE_list("models", list(MODELS), f"Models to train and compare, from {', '.join(MODELS)}.")
flags.DEFINE_string("data_dir", None, "Folder with MovieLens 100K (u.data, u.item, u.user) or a movielens-100k/ subfolder; defaults to $MTL_LAYERS_DATA_DIR.")
flags.DEFINE_bool("download", False, "Download MovieLens 100K from GroupLens when the files are not found.")
flags.DEFINE_bool("retrieval", False, "Add the two-tower retrieval task and report top-k recall.")
flags.DEFINE_bool("uncertainty_weighting", False, "Learn the task loss weights (Kendall et al., CVPR 2018).")
flags.DEFINE_integer("epochs", 10, "Training epochs.", lower_bound=1)
flags.DEFINE_integer("batch_size", 1024, "Examples per training batch.", lower_bound=1)
flags.DEFINE_float("learning_rate", 3e-3, "Adam learning rate.")
flags.DEFINE_integer("num_experts", 4, "Experts of MMoE.", lower_bound=1)
flags.DEFINE_integer("expert_units", 32, "Units of each MMoE expert.", lower_bound=1)
flags.DEFINE_integer("bottom_units", 64, "Units of the Shared-Bottom model's shared layer.", lower_bound=1)
flags.DEFINE_integer("embedding_dim", 16, "Embedding size of the id and categorical features.", lower_bound=1)
flags.DEFINE_integer(
    "seed",
    0,
    "Random seed of the split, the weights and the shuffling.",
    lower_bound=0,
    upper_bound=2**32 - 1,  # NumPy's global seed, which Keras sets, must fit in 32 bits.
)
flags.DEFINE_bool(
    "quick",
    False,
    "Smoke run: 4,000 training ratings, 2,000 test ratings, one epoch. A given --epochs "
    "keeps its value.",
)
flags.DEFINE_string(
    "export_dir",
    "",
    "Base folder of versioned SavedModels, one subfolder per model, created when missing; "
    "empty to skip. A new version never replaces an existing one.",
)
flags.DEFINE_string("metrics_json", None, "Also write the test metrics to this JSON file.")
flags.DEFINE_bool(
    "overwrite",
    False,
    "Replace an existing --metrics_json file. Without it the script stops before training "
    "when the file exists.",
)
example_flags.require_choices("models", MODELS)
example_flags.require_number("learning_rate", 0.0, include_low=False)

FLAGS = flags.FLAGS


def build_model(name, data):
    """Build the TFRS multi-task model `name` for the MovieLens tasks."""
    from mtl_layers.tasks import TaskSpec
    from mtl_layers.tfrs import MultiTaskModel, RetrievalSpec

    tasks, features = data.tasks, data.feature_specs
    if name == "mmoe":
        architecture = "mmoe"
        options = {"num_experts": FLAGS.num_experts, "expert_units": FLAGS.expert_units}
    elif name == "shared_bottom":
        architecture, options = "shared_bottom", {"bottom_units": (FLAGS.bottom_units,)}
    else:
        features = [
            dataclasses.replace(spec, embedding_dim=32)
            for spec in features
            if spec.name in ("user_id", "movie_id")
        ]
        tasks = [TaskSpec(task.name, kind=task.kind, tower_units=()) for task in tasks]
        architecture, options = "shared_bottom", {"bottom_units": (256, 128)}

    retrieval = None
    if FLAGS.retrieval:
        names = {spec.name for spec in features}
        retrieval = RetrievalSpec(
            query_features=tuple(name for name in data.user_features if name in names),
            candidate_features=tuple(name for name in data.movie_features if name in names),
            embedding_dim=32,
            top_k=(10, 50, 100),
        )
    return MultiTaskModel(
        tasks,
        features,
        architecture=architecture,
        architecture_options=options,
        retrieval=retrieval,
        candidates=data.movies if retrieval else None,
        uncertainty_weighting=FLAGS.uncertainty_weighting,
        name=name,
    )


def take(split, limit):
    """Return the features and labels of the first `limit` examples of `split` (all if None)."""
    features = {name: values[:limit] for name, values in split.features.items()}
    labels = {name: values[:limit] for name, values in split.labels.items()}
    return features, labels


def evaluate(model, features, labels):
    """Return test RMSE, exact AUC and (with retrieval) top-k recall of `model`."""
    import numpy as np
    import tensorflow as tf

    import mtl_layers as mtl

    predictions = {"rating": [], "liked": []}
    count = len(labels["rating"])
    for start in range(0, count, 4096):
        batch = {name: values[start : start + 4096] for name, values in features.items()}
        outputs = model.serving_model.predict_on_batch(batch)
        for name in predictions:
            predictions[name].append(np.asarray(outputs[name]).reshape(-1))
    rating = np.concatenate(predictions["rating"])
    liked = np.concatenate(predictions["liked"])
    results = {
        "rating_rmse": float(np.sqrt(np.mean((rating - labels["rating"]) ** 2))),
        "liked_auc": mtl.evaluation.roc_auc(labels["liked"], liked),
    }
    if model.retrieval_spec is not None:
        dataset = tf.data.Dataset.from_tensor_slices((features, labels)).batch(4096)
        logs = model.evaluate(dataset, return_dict=True, verbose=0)
        for k in model.retrieval_spec.top_k:
            results[f"recall@{k}"] = float(logs[f"retrieval_top_k/top_{k}_categorical_accuracy"])
    return results


def main(argv):
    del argv
    if FLAGS.quick:
        example_flags.apply_quick_mode({"epochs": 1})
    example_flags.check_output_file("metrics_json", overwrite=FLAGS.overwrite)
    example_flags.check_export_folder("export_dir")
    import tensorflow as tf

    import mtl_layers as mtl
    from mtl_layers.compat import keras
    from mtl_layers.tfrs import movielens_data

    epochs = FLAGS.epochs
    train_limit, test_limit = (4000, 2000) if FLAGS.quick else (None, None)

    data = movielens_data.load_movielens_ratings(
        data_dir=FLAGS.data_dir, download=FLAGS.download, seed=FLAGS.seed, embedding_dim=FLAGS.embedding_dim
    )
    logging.info("%s", data.description)
    train_features, train_labels = take(data.train, train_limit)
    validation_features, validation_labels = take(data.validation, test_limit)
    test_features, test_labels = take(data.test, test_limit)

    results = {}
    for name in FLAGS.models:
        keras.utils.set_random_seed(FLAGS.seed)
        model = build_model(name, data)
        model.compile(optimizer=keras.optimizers.Adam(FLAGS.learning_rate))
        train = (
            tf.data.Dataset.from_tensor_slices((train_features, train_labels))
            .shuffle(len(train_labels["rating"]), seed=FLAGS.seed)
            .batch(FLAGS.batch_size)
        )
        validation = tf.data.Dataset.from_tensor_slices((validation_features, validation_labels)).batch(4096)
        logging.info("Training %s for %d epochs", name, epochs)
        started = time.perf_counter()
        model.fit(
            train,
            validation_data=validation,
            epochs=epochs,
            verbose=0,
            callbacks=[mtl.callbacks.StopOnNonFiniteLoss(), mtl.callbacks.EpochLogger(epochs)],
        )
        seconds = time.perf_counter() - started
        results[name] = evaluate(model, test_features, test_labels)
        results[name]["train_seconds"] = seconds
        results[name]["params"] = int(model.serving_model.count_params())
        logging.info("%s: %s", name, results[name])
        if FLAGS.export_dir:
            path = mtl.export.export_saved_model(
                model,
                os.path.join(FLAGS.export_dir, name),
                warmup_examples={key: values[:8] for key, values in test_features.items()},
            )
            logging.info("Exported %s to %s", name, path)

    columns = ["rating_rmse", "liked_auc"] + [key for key in next(iter(results.values())) if key.startswith("recall@")]
    print(f"\nMovieLens 100K test metrics (seed {FLAGS.seed}, {epochs} epochs, {len(test_labels['rating'])} test ratings)")
    print("| model | " + " | ".join(columns) + " | params |")
    print("|---|" + "---|" * (len(columns) + 1))
    for name, metrics in results.items():
        values = " | ".join(f"{metrics[column]:.4f}" for column in columns)
        print(f"| {name} | {values} | {metrics['params']} |")
    if FLAGS.metrics_json:
        with open(FLAGS.metrics_json, "w", encoding="utf-8") as stream:
            json.dump(results, stream, indent=2)


if __name__ == "__main__":
    example_flags.run(main)
