"""Compare MoSE with its baselines on synthetic sequences and on MovieLens 100K.

Models (all from `mtl_layers.models`, same inputs, masking and towers):
`mose`, the sequential baselines `multi_model`, `shared_bottom`, `multi_head`, `mmoe`,
and the pooled (feed-forward) `pooled_shared_bottom` and `pooled_mmoe`.

* Synthetic (`mtl_layers.datasets.synthetic.sequential_regression`): two per-step
  regression tasks, for each task correlation in `--correlations` and each sparsity in
  `--sparsities` (applied to the second half of the input sources). Metric: test MSE
  per task over valid steps.
* MovieLens 100K (`mtl_layers.datasets.movielens`): per-user sequences, rating
  (test RMSE) and liked (exact test AUC) at every step, test users unseen in training.

Each configuration runs for `--seeds` seeds; tables give mean ± std. With `--write_docs`
the tables go to this script's section of `docs/reproductions.md`:

    python examples/mose_experiments.py --write_docs
    python examples/mose_experiments.py --quick   # small data, 2 seeds, 1 epoch
"""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402

import mtl_layers as mtl  # noqa: E402
from mtl_layers.compat import IS_KERAS_2, keras  # noqa: E402
from mtl_layers.datasets.synthetic import sequential_regression  # noqa: E402
from mtl_layers.evaluation import roc_auc  # noqa: E402
from mtl_layers.tasks import TaskSpec, compile_for_tasks  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_bool("quick", False, "Small data, 2 seeds and 1 epoch, to check that it runs.")
flags.DEFINE_integer("seeds", 3, "Seeds per configuration.")
flags.DEFINE_integer("epochs", 10, "Training epochs.")
flags.DEFINE_integer("batch_size", 64, "Sequences per batch.")
flags.DEFINE_integer("num_examples", 3000, "Synthetic sequences (80% train, 20% test).")
flags.DEFINE_list("correlations", ["0.2", "0.9"], "Synthetic task correlations.")
flags.DEFINE_list("sparsities", ["0.0", "0.9"], "Synthetic sparsity of the sparse sources.")
flags.DEFINE_list("experiments", ["synthetic", "movielens"], "Experiments to run.")
flags.DEFINE_string("data_dir", None, "Folder with MovieLens 100K; default $MTL_LAYERS_DATA_DIR.")
flags.DEFINE_bool("download", False, "Download MovieLens 100K from GroupLens when missing.")
flags.DEFINE_bool("write_docs", False, "Write the tables into docs/reproductions.md.")

MODELS = (
    "mose",
    "multi_model",
    "shared_bottom",
    "multi_head",
    "mmoe",
    "pooled_shared_bottom",
    "pooled_mmoe",
)
QUICK_MODELS = ("mose", "pooled_mmoe")
SIZES = {"num_experts": 4, "expert_units": 16, "bottom_units": 32}


def build(name, tasks, sequence_features, mask=None, model_inputs=None):
    """Build model `name` with the shared sizes."""
    if name == "mose":
        return mtl.models.mose(
            tasks, sequence_features, mask=mask, model_inputs=model_inputs, **SIZES
        )
    architecture = name.replace("pooled_", "")
    return mtl.models.mose_baseline(
        tasks,
        sequence_features,
        architecture,
        sequential=not name.startswith("pooled_"),
        mask=mask,
        model_inputs=model_inputs,
        **SIZES,
    )


def train(model, tasks, inputs, labels, mask, epochs, seed):
    # The quick mode runs eagerly: tracing the recurrent loop costs more than its few steps.
    compile_for_tasks(
        model, tasks, optimizer=keras.optimizers.Adam(1e-3), run_eagerly=FLAGS.quick
    )
    model.fit(
        inputs,
        {name: values[..., None] for name, values in labels.items()},
        sample_weight=mtl.models.sequence_sample_weights(tasks, mask),
        batch_size=FLAGS.batch_size,
        epochs=epochs,
        shuffle=True,
        verbose=0,
    )


def run_synthetic(models, seeds, epochs, num_examples):
    tasks = [
        TaskSpec("task_1", kind="regression", tower_units=(8,)),
        TaskSpec("task_2", kind="regression", tower_units=(8,)),
    ]
    results = {}
    for correlation in [float(value) for value in FLAGS.correlations]:
        for sparsity in [float(value) for value in FLAGS.sparsities]:
            for seed in seeds:
                data, _ = sequential_regression(
                    num_examples,
                    correlation,
                    sparsity=[0.0, 0.0, sparsity, sparsity],
                    num_sources=4,
                    seed=seed,
                )
                split = int(0.8 * num_examples)
                train_inputs = {"sequence": data["sequence"][:split], "mask": data["mask"][:split]}
                test_inputs = {"sequence": data["sequence"][split:], "mask": data["mask"][split:]}
                test_mask = data["mask"][split:]
                for name in models:
                    keras.utils.set_random_seed(seed)
                    model = build(name, tasks, data["sequence"].shape[-1])
                    start = time.time()
                    train(
                        model,
                        tasks,
                        train_inputs,
                        {key: value[:split] for key, value in data["labels"].items()},
                        data["mask"][:split],
                        epochs,
                        seed,
                    )
                    predictions = model.predict(test_inputs, batch_size=512, verbose=0)
                    errors = []
                    for task in tasks:
                        labels = data["labels"][task.name][split:]
                        residual = predictions[task.name][..., 0] - labels
                        errors.append(float(np.mean(residual[test_mask] ** 2)))
                    results.setdefault((correlation, sparsity, name), []).append(errors)
                    logging.info(
                        "synthetic p=%.2f sparsity=%.2f seed=%d %s: MSE %s (%.0f s)",
                        correlation, sparsity, seed, name, np.round(errors, 4), time.time() - start,
                    )  # fmt: skip
    return results


def _movielens_model(name, data):
    movie_id = keras.Input((None,), dtype="int32", name="movie_id")
    features = keras.Input((None, len(data.feature_names)), name="features")
    mask = keras.Input((None,), dtype="bool", name="mask")
    embedded = keras.layers.Embedding(data.num_movies + 1, 16, name="movie_embedding")(movie_id)
    sequence = keras.layers.Concatenate(name="step_features")([embedded, features])
    return build(
        name,
        data.tasks,
        sequence,
        mask=mask,
        model_inputs={"movie_id": movie_id, "features": features, "mask": mask},
    )


def run_movielens(models, seeds, epochs, max_users):
    from mtl_layers.datasets.movielens import load_movielens_sequences

    results = {}
    for seed in seeds:
        data = load_movielens_sequences(
            FLAGS.data_dir, download=FLAGS.download, seed=seed, max_users=max_users
        )
        test = data.test
        for name in models:
            keras.utils.set_random_seed(seed)
            model = _movielens_model(name, data)
            start = time.time()
            train(model, data.tasks, data.train.inputs(), data.train.labels, data.train.mask, epochs, seed)
            predictions = model.predict(test.inputs(), batch_size=512, verbose=0)
            rating = predictions["rating"][..., 0][test.mask]
            rmse = float(np.sqrt(np.mean((rating - test.labels["rating"][test.mask]) ** 2)))
            auc = roc_auc(test.labels["liked"][test.mask], predictions["liked"][..., 0][test.mask])
            results.setdefault(name, []).append([rmse, auc])
            logging.info(
                "movielens seed=%d %s: RMSE %.4f AUC %.4f (%.0f s)",
                seed, name, rmse, auc, time.time() - start,
            )  # fmt: skip
    return results


def _cell(values):
    values = np.asarray(values)
    return f"{values.mean():.4f} ± {values.std():.4f}"


def _markdown(synthetic, movielens, command, seeds, epochs):
    lines = [
        "## MoSE and its baselines on sequences",
        "",
        f"Command: `{command}` ({'Keras 2 (tf_keras)' if IS_KERAS_2 else 'Keras 3'} mode). "
        f"Machine: {_machine()}. {len(seeds)} seeds, {epochs} epochs, Adam 1e-3, batch "
        f"{FLAGS.batch_size}; sizes {SIZES}. Mean ± std over seeds.",
    ]
    if synthetic:
        lines += [
            "",
            "Synthetic sequences (`sequential_regression`, 4 sources, sparsity on sources 3-4): "
            "test MSE per task over valid steps (lower is better).",
            "",
            "| correlation | sparsity | model | MSE task_1 | MSE task_2 |",
            "|---|---|---|---|---|",
        ]
        for (correlation, sparsity, name), values in synthetic.items():
            values = np.asarray(values)
            lines.append(
                f"| {correlation} | {sparsity} | {name} | {_cell(values[:, 0])} | {_cell(values[:, 1])} |"
            )
    if movielens:
        lines += [
            "",
            "MovieLens 100K sequences (windows of 50 ratings, users split 70/10/20): "
            "test RMSE of the rating and exact AUC of liked (rating >= 4) over valid steps.",
            "",
            "| model | RMSE rating | AUC liked |",
            "|---|---|---|",
        ]
        for name, values in movielens.items():
            values = np.asarray(values)
            lines.append(f"| {name} | {_cell(values[:, 0])} | {_cell(values[:, 1])} |")
    return "\n".join(lines)


def _machine():
    from benchmarks.report import machine_description

    return machine_description()


def main(argv):
    del argv
    seeds = list(range(2 if FLAGS.quick else FLAGS.seeds))
    epochs = 1 if FLAGS.quick else FLAGS.epochs
    num_examples = 64 if FLAGS.quick else FLAGS.num_examples
    models = QUICK_MODELS if FLAGS.quick else MODELS
    if FLAGS.quick:
        FLAGS.correlations = FLAGS.correlations[:1]
        FLAGS.sparsities = FLAGS.sparsities[-1:]
    synthetic = movielens = None
    if "synthetic" in FLAGS.experiments:
        synthetic = run_synthetic(models, seeds, epochs, num_examples)
    if "movielens" in FLAGS.experiments:
        movielens = run_movielens(models, seeds, epochs, 40 if FLAGS.quick else None)
    command = " ".join(["python"] + sys.argv)
    markdown = _markdown(synthetic, movielens, command, seeds, epochs)
    print(markdown)
    if FLAGS.write_docs and not FLAGS.quick:
        from benchmarks.report import REPRODUCTIONS_PAGE, write_section

        write_section(REPRODUCTIONS_PAGE, "mose_experiments", markdown)
        logging.info("Wrote the tables to %s", REPRODUCTIONS_PAGE)


if __name__ == "__main__":
    app.run(main)
