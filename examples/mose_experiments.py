"""Compare MoSE with its baselines on synthetic sequences and on MovieLens 100K.

Models (all from `mtl_layers.models`, with the same inputs, masking and towers): `mose`,
and each baseline architecture of `mose_baseline` in its sequential form (`multi_model`,
`shared_bottom`, `multi_head`, `mmoe`: LSTM bottoms) and its pooled feed-forward form
(`pooled_multi_model`, `pooled_shared_bottom`, `pooled_multi_head`, and `pooled_mmoe`,
which is MMoE on pooled features).

* Synthetic (`mtl_layers.datasets.synthetic.sequential_regression`): two per-step
  regression tasks, for each task correlation in `--correlations` and each sparsity in
  `--sparsities` (applied to the second half of the input sources). Sequences are split
  70/10/20 into train, validation and test. Metric: test MSE per task over valid steps.
* MovieLens 100K (`mtl_layers.datasets.movielens`): per-user sequences, the rating (test
  RMSE) and liked (exact test AUC) at every step, with users split 70/10/20, so test users
  are unseen in training.

Every model trains with Adam for at most `--epochs` epochs. Training stops after
`--patience` epochs without a lower validation loss and keeps the weights of the best
epoch. Each configuration runs for `--seeds` seeds, and the tables give mean ± std over
seeds. With `--write_docs` the tables go to this script's section of
`docs/reproductions.md`:

    python examples/mose_experiments.py --write_docs
    python examples/mose_experiments.py --quick   # small data, 2 seeds, 1 epoch

Progress (one line per trained model, with the elapsed and estimated remaining time) is
logged with absl logging to stderr.
"""

import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
# `benchmarks.report`, which writes the docs section, lives at the repository root.
sys.path.insert(0, str(REPO_ROOT))
# The shared flag checks sit next to this script. Python puts the script's folder on the
# path when it runs the script, but not when another program imports the file.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import example_flags  # noqa: E402
import numpy as np  # noqa: E402
from absl import flags, logging  # noqa: E402

import mtl_layers as mtl  # noqa: E402
from mtl_layers.compat import IS_KERAS_2, keras  # noqa: E402
from mtl_layers.datasets.synthetic import sequential_regression  # noqa: E402
from mtl_layers.evaluation import roc_auc  # noqa: E402
from mtl_layers.tasks import TaskSpec, compile_for_tasks  # noqa: E402

FLAGS = flags.FLAGS
EXPERIMENTS = ("synthetic", "movielens")
SYNTHETIC_MIN_LENGTH = 5

flags.DEFINE_bool(
    "quick",
    False,
    "Small data, 2 seeds, 2 models, 1 epoch, one correlation and sparsity, to check that it "
    "runs. Flags given on the command line keep their values.",
)
flags.DEFINE_integer("seeds", 3, "Seeds per configuration (seeds 0, 1, ...).", lower_bound=1)
flags.DEFINE_integer("epochs", 20, "Maximum training epochs.", lower_bound=1)
flags.DEFINE_integer(
    "patience",
    4,
    "Epochs without a lower validation loss after which training stops (0: stop at the first).",
    lower_bound=0,
)
flags.DEFINE_float("learning_rate", 5e-3, "Adam learning rate.")
flags.DEFINE_integer("batch_size", 128, "Sequences per batch.", lower_bound=1)
# With 10 sequences or more, each of the 70/10/20 splits gets at least one.
flags.DEFINE_integer(
    "num_examples", 3000, "Synthetic sequences per configuration, split 70/10/20.", lower_bound=10
)
flags.DEFINE_integer(
    "max_length",
    12,
    f"Longest synthetic sequence; lengths are uniform in [{SYNTHETIC_MIN_LENGTH}, max_length].",
    lower_bound=SYNTHETIC_MIN_LENGTH,
)
flags.DEFINE_integer("movielens_length", 50, "Steps per MovieLens window.", lower_bound=2)
flags.DEFINE_list("correlations", ["0.2", "0.9"], "Synthetic task correlations, each in [-1, 1].")
flags.DEFINE_list(
    "sparsities", ["0.0", "0.9"], "Synthetic sparsity of the sparse sources, each in [0, 1)."
)
flags.DEFINE_list("experiments", list(EXPERIMENTS), f"Experiments to run, from {', '.join(EXPERIMENTS)}.")
flags.DEFINE_string("data_dir", None, "Folder with MovieLens 100K; default $MTL_LAYERS_DATA_DIR.")
flags.DEFINE_bool("download", False, "Download MovieLens 100K from GroupLens when missing.")
flags.DEFINE_bool("write_docs", False, "Write the tables into docs/reproductions.md.")
flags.DEFINE_bool(
    "reuse_compiled",
    True,
    "Compile each model once and reset its weights and optimizer for every later fit, "
    "instead of building and compiling a new model per fit (same results, less tracing).",
)
example_flags.require_number("learning_rate", 0.0, include_low=False)
example_flags.require_numbers("correlations", -1.0, 1.0)
example_flags.require_numbers("sparsities", 0.0, 1.0, include_high=False)
example_flags.require_choices("experiments", EXPERIMENTS)

MODELS = (
    "mose",
    "multi_model",
    "shared_bottom",
    "multi_head",
    "mmoe",
    "pooled_multi_model",
    "pooled_shared_bottom",
    "pooled_multi_head",
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


class Progress:
    """Count trained models and log the elapsed and estimated remaining time."""

    def __init__(self, total):
        self.total = total
        self.done = 0
        self.start = time.time()

    def log(self, message, *args):
        self.done += 1
        elapsed = time.time() - self.start
        remaining = elapsed / self.done * (self.total - self.done)
        logging.info(
            "[%d/%d, %.0f s elapsed, about %.0f s left] " + message,
            self.done, self.total, elapsed, remaining, *args,
        )  # fmt: skip


class CompiledModels:
    """Compiled models by experiment and name, reused across seeds and configurations.

    Tracing a model's training, validation and prediction functions takes seconds, which is
    a large share of a short fit. So each `(experiment, name)` is compiled once. A later
    request builds the model again under the current seed and copies its initial weights
    and the optimizer's initial state into the compiled model, which then trains exactly as
    a new model would. With `--reuse_compiled=false` every request returns a new model.
    """

    def __init__(self, reuse):
        self.reuse = reuse
        self._models = {}

    def get(self, key, build_model, tasks):
        """Return a compiled model with fresh weights. Call it after seeding the run."""
        model = build_model()
        cached = self._models.get(key) if self.reuse else None
        if cached is not None:
            compiled_model, optimizer_state = cached
            compiled_model.set_weights(model.get_weights())
            for variable, value in zip(compiled_model.optimizer.variables, optimizer_state):
                variable.assign(value)
            return compiled_model

        # The quick mode runs eagerly: tracing the recurrent loop costs more than its few
        # steps. The metrics are computed after training, so `fit` tracks only the losses.
        compile_for_tasks(
            model,
            tasks,
            optimizer=keras.optimizers.Adam(FLAGS.learning_rate),
            track_metrics=False,
            run_eagerly=FLAGS.quick,
        )
        # Building the optimizer creates its step counter and moment estimates, so their
        # initial values can be restored before the next fit.
        model.optimizer.build(model.trainable_variables)
        optimizer_state = [np.array(variable.numpy()) for variable in model.optimizer.variables]
        self._models[key] = (model, optimizer_state)
        return model


def train(model, tasks, train_split, validation_split, epochs):
    """Fit `model` on `(inputs, labels, mask)` splits; return the best epoch (1-based).

    Training stops after `--patience` epochs without a lower validation loss, and the
    model keeps the weights of the epoch with the lowest validation loss.
    """

    def fit_arrays(split):
        inputs, labels, mask = split
        return (
            inputs,
            {name: values[..., None] for name, values in labels.items()},
            mtl.models.sequence_sample_weights(tasks, mask),
        )

    # Keras 3.15 and tf_keras 2.21 restore the best weights when training ends, whether it
    # stopped early or ran all epochs.
    early_stopping = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=FLAGS.patience, restore_best_weights=True
    )
    inputs, labels, sample_weights = fit_arrays(train_split)
    history = model.fit(
        inputs,
        labels,
        sample_weight=sample_weights,
        validation_data=fit_arrays(validation_split),
        batch_size=FLAGS.batch_size,
        epochs=epochs,
        shuffle=True,
        callbacks=[early_stopping],
        verbose=0,
    )
    return int(np.argmin(history.history["val_loss"])) + 1


def _synthetic_splits(data, num_examples):
    """Split synthetic sequences 70/10/20 into `(inputs, labels, mask)` triples."""
    bounds = (0, int(0.7 * num_examples), int(0.8 * num_examples), num_examples)
    splits = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        mask = data["mask"][start:stop]
        inputs = {"sequence": data["sequence"][start:stop], "mask": mask}
        labels = {name: values[start:stop] for name, values in data["labels"].items()}
        splits.append((inputs, labels, mask))
    return splits


def run_synthetic(models, seeds, epochs, num_examples, compiled_models, progress):
    """Return `{(correlation, sparsity, model): [[mse_1, mse_2, best_epoch], ...]}`."""
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
                    min_length=SYNTHETIC_MIN_LENGTH,
                    max_length=FLAGS.max_length,
                    seed=seed,
                )
                train_split, validation_split, test_split = _synthetic_splits(data, num_examples)
                test_inputs, test_labels, test_mask = test_split
                for name in models:
                    keras.utils.set_random_seed(seed)
                    start = time.time()
                    model = compiled_models.get(
                        ("synthetic", name),
                        lambda: build(name, tasks, data["sequence"].shape[-1]),
                        tasks,
                    )
                    best_epoch = train(model, tasks, train_split, validation_split, epochs)
                    predictions = model.predict(test_inputs, batch_size=512, verbose=0)
                    errors = []
                    for task in tasks:
                        residual = predictions[task.name][..., 0] - test_labels[task.name]
                        errors.append(float(np.mean(residual[test_mask] ** 2)))
                    results.setdefault((correlation, sparsity, name), []).append(
                        errors + [best_epoch]
                    )
                    progress.log(
                        "synthetic p=%.2f sparsity=%.2f seed=%d %s: MSE %s, best epoch %d (%.0f s)",
                        correlation, sparsity, seed, name, np.round(errors, 4), best_epoch,
                        time.time() - start,
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


def load_movielens(seed, max_users):
    """Return the MovieLens sequences of one seed's split, as `run_movielens` reads them."""
    from mtl_layers.datasets.movielens import load_movielens_sequences

    return load_movielens_sequences(
        FLAGS.data_dir,
        download=FLAGS.download,
        max_length=FLAGS.movielens_length,
        seed=seed,
        max_users=max_users,
    )


def run_movielens(models, seeds, epochs, max_users, compiled_models, progress, loaded=None):
    """Return `{model: [[rmse, auc, best_epoch], ...]}`, one row per seed.

    `loaded` maps seeds to data that `load_movielens` already returned.
    """
    loaded = dict(loaded or {})
    results = {}
    for seed in seeds:
        data = loaded.pop(seed) if seed in loaded else load_movielens(seed, max_users)
        splits = [
            (split.inputs(), split.labels, split.mask) for split in (data.train, data.validation)
        ]
        test = data.test
        for name in models:
            keras.utils.set_random_seed(seed)
            start = time.time()
            model = compiled_models.get(
                ("movielens", name), lambda: _movielens_model(name, data), data.tasks
            )
            best_epoch = train(model, data.tasks, splits[0], splits[1], epochs)
            predictions = model.predict(test.inputs(), batch_size=512, verbose=0)
            rating = predictions["rating"][..., 0][test.mask]
            rmse = float(np.sqrt(np.mean((rating - test.labels["rating"][test.mask]) ** 2)))
            auc = roc_auc(test.labels["liked"][test.mask], predictions["liked"][..., 0][test.mask])
            results.setdefault(name, []).append([rmse, auc, best_epoch])
            progress.log(
                "movielens seed=%d %s: RMSE %.4f AUC %.4f, best epoch %d (%.0f s)",
                seed, name, rmse, auc, best_epoch, time.time() - start,
            )  # fmt: skip
    return results


def _cell(values):
    values = np.asarray(values)
    return f"{values.mean():.4f} ± {values.std():.4f}"


def _synthetic_task_mean(values):
    """Return the per-seed MSE averaged over the two tasks."""
    return np.asarray(values)[:, :2].mean(axis=1)


def _synthetic_reading(synthetic):
    """Return sentences that compare MoSE with the best alternative per configuration."""
    configurations = sorted({key[:2] for key in synthetic})
    lines = []
    # The ratio of MoSE's MSE to the best alternative's is computed for the means and for
    # each seed. Per-seed ratios are paired because a seed generates the same data for
    # every model.
    mean_ratios, seed_ratios = {}, {}
    mose_best = 0
    for correlation, sparsity in configurations:
        scores = {
            name: _synthetic_task_mean(values).mean()
            for (p, s, name), values in synthetic.items()
            if (p, s) == (correlation, sparsity)
        }
        if "mose" not in scores or len(scores) < 2:
            continue
        ranking = sorted(scores, key=scores.get)
        mose_best += int(ranking[0] == "mose")
        best_other = min((name for name in scores if name != "mose"), key=scores.get)
        key = (correlation, sparsity)
        mean_ratios[key] = scores["mose"] / scores[best_other]
        mose_seeds = _synthetic_task_mean(synthetic[(correlation, sparsity, "mose")])
        other_seeds = _synthetic_task_mean(synthetic[(correlation, sparsity, best_other)])
        seed_ratios[key] = mose_seeds / other_seeds
        lines.append(
            f"- Correlation {correlation}, sparsity {sparsity}: MoSE ranks "
            f"{ranking.index('mose') + 1} of {len(ranking)}. Its task-mean MSE is "
            f"{mean_ratios[key]:.2f} times that of the best alternative, {best_other} "
            f"(per seed {seed_ratios[key].min():.2f} to {seed_ratios[key].max():.2f}), and "
            f"lower in {int(np.sum(seed_ratios[key] < 1))} of {len(mose_seeds)} seeds."
        )
    lines.insert(
        0,
        f"- MoSE has the lowest mean test MSE in {mose_best} of {len(mean_ratios)} "
        "synthetic configurations.",
    )
    sequential_ahead = 0
    for correlation, sparsity in configurations:
        scores = {
            name: _synthetic_task_mean(values).mean()
            for (p, s, name), values in synthetic.items()
            if (p, s) == (correlation, sparsity)
        }
        pooled = [score for name, score in scores.items() if name.startswith("pooled_")]
        sequential = [score for name, score in scores.items() if not name.startswith("pooled_")]
        if pooled and sequential:
            sequential_ahead += int(max(sequential) < min(pooled))
    lines.append(
        f"- Every sequential model (MoSE and the LSTM baselines) has a lower mean MSE than "
        f"every pooled model in {sequential_ahead} of {len(configurations)} configurations."
    )

    for correlation in sorted({p for p, _ in mean_ratios}):
        by_sparsity = sorted(s for p, s in mean_ratios if p == correlation)
        if len(by_sparsity) < 2:
            continue
        low, high = (correlation, by_sparsity[0]), (correlation, by_sparsity[-1])
        trend = "smaller" if mean_ratios[high] < mean_ratios[low] else "not smaller"
        overlap = (
            seed_ratios[low].min() <= seed_ratios[high].max()
            and seed_ratios[high].min() <= seed_ratios[low].max()
        )
        evidence = (
            "The per-seed ranges overlap, so these seeds do not establish the trend."
            if overlap
            else "The per-seed ranges do not overlap."
        )
        lines.append(
            f"- Correlation {correlation}: from sparsity {low[1]} to {high[1]} the ratio of "
            f"MoSE's MSE to the best alternative's goes from {mean_ratios[low]:.2f} to "
            f"{mean_ratios[high]:.2f}, so MoSE's gap is {trend} at high sparsity. {evidence}"
        )

    still_improving = sum(
        int(best_epoch == FLAGS.epochs)
        for values in synthetic.values()
        for best_epoch in np.asarray(values)[:, 2]
    )
    total_fits = sum(len(values) for values in synthetic.values())
    lines.append(
        f"- {still_improving} of {total_fits} synthetic fits had their lowest validation "
        f"loss in the last of the {FLAGS.epochs} epochs, so they were still improving when "
        "training ended: the tables compare models at equal training budgets, not at "
        "convergence."
    )
    return lines


def _movielens_reading(movielens):
    """Return sentences that compare MoSE with the best alternative per MovieLens metric."""
    if "mose" not in movielens or len(movielens) < 2:
        return []
    lines = []
    for column, metric, lower_is_better in ((0, "RMSE", True), (1, "AUC", False)):
        means = {name: np.asarray(values)[:, column].mean() for name, values in movielens.items()}
        ordered = sorted(means, key=means.get, reverse=not lower_is_better)
        best_other = next(name for name in ordered if name != "mose")
        # A seed fixes the user split for every model, so the seeds pair the two models.
        differences = (
            np.asarray(movielens["mose"])[:, column] - np.asarray(movielens[best_other])[:, column]
        )
        mose_better = differences < 0 if lower_is_better else differences > 0
        lines.append(
            f"- MovieLens {metric}: MoSE ranks {ordered.index('mose') + 1} of {len(ordered)}. "
            f"Against the best alternative, {best_other}, it differs by "
            f"{differences.mean():+.4f} (per seed {differences.min():+.4f} to "
            f"{differences.max():+.4f}) and is better in {int(mose_better.sum())} of "
            f"{len(differences)} seeds."
        )
    return lines


def _markdown(synthetic, movielens, command, seeds, epochs, run_seconds):
    mode = "Keras 2 (tf_keras)" if IS_KERAS_2 else "Keras 3"
    lines = [
        "## MoSE and its baselines on sequences",
        "",
        f"Command: `{command}` ({mode} mode). Machine: {_machine()}. The whole run took "
        f"{run_seconds / 60:.1f} minutes.",
        "",
        f"Protocol: {len(seeds)} seeds (0-{len(seeds) - 1}); Adam with learning rate "
        f"{FLAGS.learning_rate}, batch {FLAGS.batch_size}, at most {epochs} epochs, stopping "
        f"after {FLAGS.patience} epochs without a lower validation loss and keeping the best "
        f"epoch's weights. Sizes {SIZES} for every model. Each cell is the mean ± std over "
        "seeds; the epochs column is the mean best epoch.",
    ]
    if synthetic:
        lines += _synthetic_tables(synthetic)
    if movielens:
        lines += [
            "",
            "### MovieLens 100K",
            "",
            f"Per-user windows of {FLAGS.movielens_length} ratings, users split 70/10/20 "
            "(test users are unseen in training): test RMSE of the rating and exact AUC of "
            "liked (rating >= 4) over valid steps.",
            "",
            "| model | RMSE rating | AUC liked | epochs |",
            "|---|---|---|---|",
        ]
        for name, values in movielens.items():
            values = np.asarray(values)
            lines.append(
                f"| {name} | {_cell(values[:, 0])} | {_cell(values[:, 1])} | "
                f"{values[:, 2].mean():.1f} |"
            )
    reading = (_synthetic_reading(synthetic) if synthetic else []) + (
        _movielens_reading(movielens) if movielens else []
    )
    if reading:
        lines += ["", "### Reading", "", "Computed from the tables above:", ""] + reading
    return "\n".join(lines)


def _synthetic_tables(synthetic):
    configurations = sorted({key[:2] for key in synthetic})
    names = list(dict.fromkeys(key[2] for key in synthetic))
    header = " | ".join(f"p={p}, sparsity={s}" for p, s in configurations)
    lines = [
        "",
        "### Synthetic sequences",
        "",
        f"`sequential_regression`: {FLAGS.num_examples} sequences of {SYNTHETIC_MIN_LENGTH} "
        f"to {FLAGS.max_length} steps per configuration, split 70/10/20, 4 input sources "
        "with the sparsity on sources 3 and 4, and task correlation p. Test MSE over valid "
        "steps, averaged over the two tasks (lower is better):",
        "",
        f"| model | {header} |",
        "|---" * (len(configurations) + 1) + "|",
    ]
    for name in names:
        cells = [
            _cell(_synthetic_task_mean(synthetic[(p, s, name)]))
            for p, s in configurations
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Per task:",
        "",
        "| correlation | sparsity | model | MSE task_1 | MSE task_2 | epochs |",
        "|---|---|---|---|---|---|",
    ]
    for (correlation, sparsity, name), values in synthetic.items():
        values = np.asarray(values)
        lines.append(
            f"| {correlation} | {sparsity} | {name} | {_cell(values[:, 0])} | "
            f"{_cell(values[:, 1])} | {values[:, 2].mean():.1f} |"
        )
    return lines


def _machine():
    from benchmarks.report import machine_description

    return machine_description()


def main(argv):
    del argv
    start = time.time()
    if FLAGS.quick:
        example_flags.apply_quick_mode(
            {
                "seeds": 2,
                "epochs": 1,
                "num_examples": 64,
                "correlations": FLAGS.correlations[:1],
                "sparsities": FLAGS.sparsities[-1:],
            }
        )
    seeds = list(range(FLAGS.seeds))
    epochs = FLAGS.epochs
    num_examples = FLAGS.num_examples
    models = QUICK_MODELS if FLAGS.quick else MODELS

    total = 0
    if "synthetic" in FLAGS.experiments:
        total += len(FLAGS.correlations) * len(FLAGS.sparsities) * len(seeds) * len(models)
    if "movielens" in FLAGS.experiments:
        total += len(seeds) * len(models)
    logging.info(
        "Training %d models: experiments %s, %d seeds, at most %d epochs each.",
        total, FLAGS.experiments, len(seeds), epochs,
    )  # fmt: skip
    progress = Progress(total)

    # MovieLens is read before any training, so that a missing or damaged file stops the
    # run at once, not after the synthetic experiments.
    max_users = 40 if FLAGS.quick else None
    loaded = {}
    if "movielens" in FLAGS.experiments:
        loaded[seeds[0]] = load_movielens(seeds[0], max_users)

    compiled_models = CompiledModels(FLAGS.reuse_compiled)
    synthetic = movielens = None
    if "synthetic" in FLAGS.experiments:
        synthetic = run_synthetic(models, seeds, epochs, num_examples, compiled_models, progress)
    if "movielens" in FLAGS.experiments:
        movielens = run_movielens(
            models, seeds, epochs, max_users, compiled_models, progress, loaded
        )
    command = " ".join(["python"] + sys.argv)
    markdown = _markdown(synthetic, movielens, command, seeds, epochs, time.time() - start)
    print(markdown)
    if FLAGS.write_docs and not FLAGS.quick:
        from benchmarks.report import REPRODUCTIONS_PAGE, write_section

        write_section(REPRODUCTIONS_PAGE, "mose_experiments", markdown)
        logging.info("Wrote the tables to %s", REPRODUCTIONS_PAGE)
    logging.info("Finished in %.0f s.", time.time() - start)


if __name__ == "__main__":
    example_flags.run(main)
