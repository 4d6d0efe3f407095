"""Task-correlation study of Ma et al. (KDD 2018) on synthetic regression data.

Trains Shared-Bottom, OMoE and MMoE on two regression tasks whose weight vectors have a
chosen cosine similarity (`mtl.datasets.synthetic.mmoe_regression`), for several
correlations and seeds. The script reports the test loss per model and correlation, the
training curves, the distribution of final losses over seeds and MMoE's gate weights.

Sizes follow the paper: 8 experts of 16 units, task towers of 8 units, and a Shared-Bottom
layer sized so that its parameter count matches MMoE's. Every seed draws new data (new
w1, w2, alpha, beta, inputs and noise) and new initial weights.

    python examples/mmoe_synthetic.py                 # the full study, minutes per seed
    python examples/mmoe_synthetic.py --quick         # 2 seeds on small data, about a minute
    python examples/mmoe_synthetic.py --write_docs    # also update docs/ and docs/images/
"""

import json
import pathlib
import sys
import time

from absl import app, flags, logging

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
# `benchmarks.report` writes the docs section; it lives at the repository root.
sys.path.insert(0, str(REPO_ROOT))
# The shared flag checks sit next to this script. Python puts the script's folder on the
# path when it runs the script, but not when another program imports the file.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import example_flags  # noqa: E402

TASKS = ("task_1", "task_2")
MODEL_LABELS = {"shared_bottom": "Shared-Bottom", "omoe": "OMoE", "mmoe": "MMoE"}

flags.DEFINE_list("correlations", ["0.5", "0.9", "1.0"], "Cosine similarities of the task weights, each in [-1, 1].")
flags.DEFINE_list("models", list(MODEL_LABELS), f"Models to train, from {', '.join(MODEL_LABELS)}.")
flags.DEFINE_integer("num_seeds", 10, "Seeds per model and correlation (seeds 0, 1, ...).", lower_bound=1)
flags.DEFINE_integer("num_train", 20000, "Training examples per data set.", lower_bound=1)
flags.DEFINE_integer("num_test", 5000, "Test examples per data set.", lower_bound=1)
# The generator draws two orthogonal unit vectors, which needs at least 2 dimensions.
flags.DEFINE_integer("input_dim", 100, "Input dimension d of the synthetic data.", lower_bound=2)
flags.DEFINE_integer("epochs", 50, "Training epochs.", lower_bound=1)
flags.DEFINE_integer("batch_size", 128, "Examples per training batch.", lower_bound=1)
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.")
flags.DEFINE_integer("num_experts", 8, "Experts of OMoE and MMoE.", lower_bound=1)
flags.DEFINE_integer("expert_units", 16, "Units of each expert.", lower_bound=1)
flags.DEFINE_integer("tower_units", 8, "Units of each task tower's hidden layer.", lower_bound=1)
flags.DEFINE_integer(
    "steps_per_execution", 16, "Training steps run per call into TensorFlow.", lower_bound=1
)
flags.DEFINE_bool(
    "quick",
    False,
    "Small data, 2 seeds, 2 epochs, correlations 0.5 and 1.0: checks that the script runs. "
    "Flags given on the command line keep their values.",
)
flags.DEFINE_string(
    "output_dir", "runs/mmoe_synthetic", "Folder of the results JSON and plots, created when missing."
)
flags.DEFINE_bool(
    "overwrite",
    False,
    "Replace an existing results.json in --output_dir. Without it the script stops before "
    "training when the file exists.",
)
flags.DEFINE_bool("write_docs", False, "Write the plots to docs/images/ and the tables to docs/reproductions.md.")
flags.DEFINE_string(
    "from_results", None, "Skip training and report the runs in this results.json file; pass the run's other flags too."
)
example_flags.require_numbers("correlations", -1.0, 1.0)
example_flags.require_choices("models", list(MODEL_LABELS))
example_flags.require_number("learning_rate", 0.0, include_low=False)
example_flags.require_results_file()

FLAGS = flags.FLAGS


def mmoe_parameter_count(input_dim, num_experts, expert_units, tower_units, num_tasks, one_gate=False):
    """Return the parameter count of an (O)MoE model with one-layer experts and towers."""
    experts = num_experts * (input_dim * expert_units + expert_units)
    gates = (1 if one_gate else num_tasks) * (input_dim * num_experts + num_experts)
    towers = num_tasks * (expert_units * tower_units + tower_units + tower_units + 1)
    return experts + gates + towers


def matched_bottom_units(input_dim, target_params, tower_units, num_tasks) -> int:
    """Return the Shared-Bottom width whose parameter count is closest to `target_params`."""
    # A bottom of h units: (input_dim + 1) h + num_tasks (h t + t + t + 1) parameters.
    per_unit = input_dim + 1 + num_tasks * tower_units
    fixed = num_tasks * (2 * tower_units + 1)
    return max(1, round((target_params - fixed) / per_unit))


def build_model(name, bottom_units):
    """Build one of the three models for the two regression tasks."""
    import mtl_layers as mtl
    from mtl_layers.compat import keras

    tasks = [mtl.tasks.TaskSpec(task, kind="regression", tower_units=(FLAGS.tower_units,)) for task in TASKS]
    inputs = keras.Input((FLAGS.input_dim,), name="x")
    if name == "shared_bottom":
        model = mtl.models.shared_bottom(tasks, inputs, bottom_units=(bottom_units,))
    elif name == "omoe":
        model = mtl.models.omoe(tasks, inputs, num_experts=FLAGS.num_experts, expert_units=FLAGS.expert_units)
    elif name == "mmoe":
        model = mtl.models.mmoe(tasks, inputs, num_experts=FLAGS.num_experts, expert_units=FLAGS.expert_units)
    else:
        raise ValueError(
            f"Unknown model {name!r} in --models. Use shared_bottom, omoe or mmoe."
        )
    mtl.tasks.compile_for_tasks(
        model,
        tasks,
        optimizer=keras.optimizers.Adam(FLAGS.learning_rate),
        steps_per_execution=FLAGS.steps_per_execution,
    )
    return model


def mean_gate_weights(model, features):
    """Return MMoE's mean gate weight per task and expert on `features`, a dict of lists."""
    import numpy as np

    weights = {}
    for task in TASKS:
        gate = model.get_layer(f"{task}_gate")
        logits = np.asarray(gate.logits_layer(features), np.float64)
        logits -= logits.max(axis=-1, keepdims=True)
        probabilities = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
        weights[task] = probabilities.mean(axis=0).tolist()
    return weights


def train_one(model_name, correlation, seed, bottom_units):
    """Train one model on one seed's data; return its curves and final test losses."""
    import numpy as np

    from mtl_layers.compat import keras
    from mtl_layers.datasets import synthetic

    (features, labels), _ = synthetic.mmoe_regression(
        FLAGS.num_train + FLAGS.num_test, correlation, input_dim=FLAGS.input_dim, seed=seed
    )
    train, test = synthetic.mmoe.split_examples(features, labels, FLAGS.num_train)
    keras.utils.set_random_seed(seed)
    model = build_model(model_name, bottom_units)
    history = model.fit(
        train[0],
        train[1],
        batch_size=FLAGS.batch_size,
        epochs=FLAGS.epochs,
        validation_data=test,
        validation_batch_size=4096,
        shuffle=True,
        verbose=0,
    )
    predictions = model(test[0], training=False)
    test_mse = {task: float(np.mean((np.ravel(predictions[task]) - test[1][task]) ** 2)) for task in TASKS}
    result = {
        "model": model_name,
        "correlation": correlation,
        "seed": seed,
        "params": int(model.count_params()),
        "test_mse": test_mse,
        "test_loss": float(np.mean(list(test_mse.values()))),
        # Mean of the two tasks' MSE per epoch, on the training and the test data.
        "train_curve": [
            float((a + b) / 2) for a, b in zip(history.history["task_1_loss"], history.history["task_2_loss"])
        ],
        "test_curve": [
            float((a + b) / 2)
            for a, b in zip(history.history["val_task_1_loss"], history.history["val_task_2_loss"])
        ],
    }
    if model_name == "mmoe":
        result["gate_weights"] = mean_gate_weights(model, test[0])
    return result


def summarize(results, correlations, models):
    """Return `{model: {correlation: (mean, std, min, max, median)}}` of the final test losses."""
    import numpy as np

    table = {}
    for model_name in models:
        table[model_name] = {}
        for correlation in correlations:
            losses = [r["test_loss"] for r in results if r["model"] == model_name and r["correlation"] == correlation]
            table[model_name][correlation] = (
                float(np.mean(losses)),
                float(np.std(losses)),
                float(np.min(losses)),
                float(np.max(losses)),
                float(np.median(losses)),
            )
    return table


def plot_results(results, table, correlations, models, image_dir: pathlib.Path) -> dict:
    """Write the four plots and return their paths keyed by kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    image_dir.mkdir(parents=True, exist_ok=True)
    paths = {}

    figure, axis = plt.subplots(figsize=(5, 3.5))
    for model_name in models:
        means = [table[model_name][c][0] for c in correlations]
        stds = [table[model_name][c][1] for c in correlations]
        axis.errorbar(correlations, means, yerr=stds, marker="o", capsize=3, label=MODEL_LABELS[model_name])
    axis.set_xlabel("task correlation (cosine of w1, w2)")
    axis.set_ylabel("test MSE, mean of 2 tasks")
    axis.set_title("Test loss vs task correlation (mean ± std over seeds)")
    axis.legend()
    figure.tight_layout()
    paths["loss_vs_correlation"] = image_dir / "mmoe_synthetic_loss_vs_correlation.png"
    figure.savefig(paths["loss_vs_correlation"], dpi=110)
    plt.close(figure)

    figure, axes = plt.subplots(1, len(correlations), figsize=(4 * len(correlations), 3.5), sharey=True)
    axes = np.atleast_1d(axes)
    for axis, correlation in zip(axes, correlations):
        for index, model_name in enumerate(models):
            curves = np.array(
                [r["test_curve"] for r in results if r["model"] == model_name and r["correlation"] == correlation]
            )
            epochs = np.arange(1, curves.shape[1] + 1)
            color = f"C{index}"
            axis.plot(epochs, curves.mean(axis=0), color=color, label=MODEL_LABELS[model_name])
            axis.fill_between(epochs, curves.min(axis=0), curves.max(axis=0), color=color, alpha=0.15)
        axis.set_title(f"correlation {correlation}")
        axis.set_xlabel("epoch")
        axis.set_yscale("log")
    axes[0].set_ylabel("test MSE (mean, min-max band)")
    axes[0].legend()
    figure.tight_layout()
    paths["curves"] = image_dir / "mmoe_synthetic_curves.png"
    figure.savefig(paths["curves"], dpi=110)
    plt.close(figure)

    figure, axes = plt.subplots(1, len(correlations), figsize=(4 * len(correlations), 3.5), sharey=True)
    axes = np.atleast_1d(axes)
    for axis, correlation in zip(axes, correlations):
        groups = [
            [r["test_loss"] for r in results if r["model"] == model_name and r["correlation"] == correlation]
            for model_name in models
        ]
        bins = np.histogram_bin_edges(np.concatenate(groups), bins=12)
        for index, (model_name, losses) in enumerate(zip(models, groups)):
            axis.hist(losses, bins=bins, alpha=0.5, color=f"C{index}", label=MODEL_LABELS[model_name])
        axis.set_title(f"correlation {correlation}")
        axis.set_xlabel("final test MSE")
    axes[0].set_ylabel("seeds")
    axes[0].legend()
    figure.tight_layout()
    paths["histograms"] = image_dir / "mmoe_synthetic_final_loss_histograms.png"
    figure.savefig(paths["histograms"], dpi=110)
    plt.close(figure)

    gate_runs = [r for r in results if "gate_weights" in r]
    if gate_runs:
        figure, axes = plt.subplots(1, len(correlations), figsize=(4 * len(correlations), 2.2))
        axes = np.atleast_1d(axes)
        for axis, correlation in zip(axes, correlations):
            first = min((r for r in gate_runs if r["correlation"] == correlation), key=lambda r: r["seed"])
            matrix = np.array([first["gate_weights"][task] for task in TASKS])
            image = axis.imshow(matrix, vmin=0, vmax=max(0.5, matrix.max()), cmap="viridis", aspect="auto")
            axis.set_yticks(range(len(TASKS)), TASKS)
            axis.set_xlabel("expert")
            axis.set_title(f"MMoE gates, corr. {correlation}, seed {first['seed']}", fontsize=9)
        figure.colorbar(image, ax=list(axes))
        paths["gates"] = image_dir / "mmoe_synthetic_gates.png"
        figure.savefig(paths["gates"], dpi=110)
        plt.close(figure)
    return paths


def paper_checks(table, correlations, models) -> list:
    """Return Markdown bullets that test the paper's three findings on the mean losses."""
    ordered = sorted(correlations)
    lines = []
    for model_name in models:
        means = [table[model_name][c][0] for c in ordered]
        falling = all(later <= earlier for earlier, later in zip(means, means[1:]))
        lines.append(
            f"* {MODEL_LABELS[model_name]}: loss {'falls' if falling else 'does not fall'} as the "
            "correlation rises (" + ", ".join(f"{c}: {m:.4f}" for c, m in zip(ordered, means)) + ")."
        )
    spreads = {name: max(table[name][c][0] for c in ordered) - min(table[name][c][0] for c in ordered) for name in models}
    steadiest = min(spreads, key=spreads.get)
    lines.append(
        f"* Smallest change of mean loss across correlations: {MODEL_LABELS[steadiest]} ("
        + ", ".join(f"{MODEL_LABELS[name]} {spread:.4f}" for name, spread in spreads.items()) + ")."
    )
    if "shared_bottom" in models:
        for name in (n for n in models if n != "shared_bottom"):
            wins = [c for c in ordered if table[name][c][0] < table["shared_bottom"][c][0]]
            lines.append(
                f"* {MODEL_LABELS[name]} beats Shared-Bottom on the mean at {len(wins)} of {len(ordered)} "
                "correlations" + (f" ({', '.join(str(c) for c in wins)})." if wins else ".")
            )
    return lines


def paired_wins(results, correlations, models) -> list:
    """Return Markdown bullets: per correlation, the seeds where each MoE model beats Shared-Bottom.

    Every model of one seed trains on the same data, so comparing within a seed removes
    the spread that comes from the data draw (some draws of alpha and beta are much
    harder to fit than others).
    """
    if "shared_bottom" not in models:
        return []
    loss = {(r["model"], r["correlation"], r["seed"]): r["test_loss"] for r in results}
    lines = []
    for name in (n for n in models if n != "shared_bottom"):
        counts = []
        for correlation in sorted(correlations):
            seeds = [s for (m, c, s) in loss if m == name and c == correlation and ("shared_bottom", c, s) in loss]
            wins = sum(loss[(name, correlation, s)] < loss[("shared_bottom", correlation, s)] for s in seeds)
            counts.append(f"{correlation}: {wins}/{len(seeds)}")
        lines.append(f"* Seeds where {MODEL_LABELS[name]} beats Shared-Bottom on the same data: " + ", ".join(counts) + ".")
    return lines


def paired_analysis(results, correlations, models) -> list:
    """Return Markdown bullets that compare the models seed by seed on the same data.

    One seed draws the task weights, alpha and beta once for all correlations and
    models, so per-seed differences remove the spread of the data draw. Standard errors
    are over seeds.
    """
    import numpy as np

    loss = {(r["model"], r["correlation"], r["seed"]): r["test_loss"] for r in results}
    ordered = sorted(correlations)
    seeds = sorted({s for (m, c, s) in loss if all((n, x, s) in loss for n in models for x in ordered)})
    if len(seeds) < 2 or len(ordered) < 2:
        return []

    def mean_and_error(values):
        values = np.asarray(values)
        return values.mean(), values.std(ddof=1) / np.sqrt(len(values))

    losses = np.array([[[loss[(m, c, s)] for s in seeds] for c in ordered] for m in models])
    lines = [
        f"* Spread: the standard deviation over seeds averages {losses.std(axis=2, ddof=1).mean():.4f}, "
        f"the one between models on the same seed {losses.std(axis=0, ddof=1).mean():.4f}. "
        "The data draw, not the model, sets most of a run's loss."
    ]

    # Change from the highest to the lowest correlation, per seed: loss(low) - loss(high).
    low, high = ordered[0], ordered[-1]
    changes = {m: mean_and_error([loss[(m, low, s)] - loss[(m, high, s)] for s in seeds]) for m in models}
    lines.append(
        f"* Change of loss from correlation {high} to {low} on the same data (mean ± standard error): "
        + ", ".join(f"{MODEL_LABELS[m]} {mean:+.4f} ± {error:.4f}" for m, (mean, error) in changes.items())
        + "."
    )

    if "shared_bottom" in models:
        for name in (n for n in models if n != "shared_bottom"):
            # log(loss_model / loss_shared_bottom) per seed: negative means the model is better.
            ratios = [
                mean_and_error([np.log(loss[(name, c, s)] / loss[("shared_bottom", c, s)]) for s in seeds])
                for c in ordered
            ]
            lines.append(
                f"* {MODEL_LABELS[name]} loss relative to Shared-Bottom on the same data, "
                "exp(mean log ratio) with the standard error of the log: "
                + ", ".join(f"{c}: {np.exp(mean):.2f} (± {error:.2f})" for c, (mean, error) in zip(ordered, ratios))
                + "."
            )

    curves = [r["test_curve"] for r in results if len(r.get("test_curve") or []) > 5]
    if curves:
        improving = sum(curve[-1] < curve[-6] for curve in curves)
        lines.append(
            f"* Training budget: {improving} of {len(curves)} runs had a lower test loss after the last epoch "
            "than 5 epochs earlier. Those runs were still improving when training stopped."
        )
    return lines


def markdown_report(results, table, correlations, models, params, paths, command, seconds) -> str:
    """Return the Markdown section of docs/reproductions.md."""
    from benchmarks.report import machine_description

    lines = [
        "## MMoE paper: synthetic task-correlation study",
        "",
        f"Command: `{command}` ({_duration(seconds)}on {machine_description()}).",
        "",
        f"Data: `mtl.datasets.synthetic.mmoe_regression`, d = {FLAGS.input_dim}, 10 sinusoids, c = 1, "
        f"{FLAGS.num_train:,} training and {FLAGS.num_test:,} test examples, new data and weights per "
        f"seed. Training: Adam {FLAGS.learning_rate:g}, batch {FLAGS.batch_size}, {FLAGS.epochs} epochs, "
        f"{FLAGS.num_seeds} seeds. Loss: test MSE, mean of the two tasks.",
        "",
        "| model | params | " + " | ".join(f"corr. {c}" for c in correlations) + " |",
        "|---|---|" + "---|" * len(correlations),
    ]
    for model_name in models:
        cells = [f"{table[model_name][c][0]:.4f} ± {table[model_name][c][1]:.4f}" for c in correlations]
        lines.append(f"| {MODEL_LABELS[model_name]} | {params[model_name]:,} | " + " | ".join(cells) + " |")
    lines += ["", "Mean ± standard deviation over seeds. Median (min–max) per cell:", ""]
    lines += ["| model | " + " | ".join(f"corr. {c}" for c in correlations) + " |", "|---|" + "---|" * len(correlations)]
    for model_name in models:
        cells = [
            f"{table[model_name][c][4]:.4f} ({table[model_name][c][2]:.4f}–{table[model_name][c][3]:.4f})"
            for c in correlations
        ]
        lines.append(f"| {MODEL_LABELS[model_name]} | " + " | ".join(cells) + " |")
    lines += ["", "Checks of the paper's findings on these runs (computed from the means above):", ""]
    lines += paper_checks(table, correlations, models)
    lines += paired_wins(results, correlations, models)
    lines += ["", "The same runs compared seed by seed:", ""]
    lines += paired_analysis(results, correlations, models)
    lines.append("")
    for kind, title in (
        ("loss_vs_correlation", "Test loss vs correlation"),
        ("curves", "Test-loss curves"),
        ("histograms", "Final test loss over seeds (trainability)"),
        ("gates", "MMoE mean gate weight per task and expert"),
    ):
        if kind in paths:
            relative = paths[kind].relative_to(REPO_ROOT / "docs").as_posix()
            lines.append(f"![{title}]({relative})")
            lines.append("")
    return "\n".join(lines)


def _duration(seconds) -> str:
    """Return "N min " for a known duration and "" for NaN."""
    return "" if seconds != seconds else f"{seconds / 60:.0f} min "


# Quick mode shrinks the run so that it finishes in about a minute.
QUICK_FLAGS = {
    "num_seeds": 2,
    "num_train": 2000,
    "num_test": 500,
    "epochs": 2,
    "correlations": ["0.5", "1.0"],
}


def main(argv):
    del argv
    if FLAGS.quick:
        example_flags.apply_quick_mode(QUICK_FLAGS)
    correlations = [float(value) for value in FLAGS.correlations]
    models = list(FLAGS.models)

    results_file = example_flags.results_path(bool(FLAGS.from_results), FLAGS.overwrite)
    output_dir = results_file.parent

    mmoe_params = mmoe_parameter_count(
        FLAGS.input_dim, FLAGS.num_experts, FLAGS.expert_units, FLAGS.tower_units, len(TASKS)
    )
    bottom_units = matched_bottom_units(FLAGS.input_dim, mmoe_params, FLAGS.tower_units, len(TASKS))
    logging.info("Shared-Bottom width %d matches MMoE's %d parameters.", bottom_units, mmoe_params)

    results = []
    total = len(models) * len(correlations) * FLAGS.num_seeds
    started = time.perf_counter()
    if FLAGS.from_results:
        results = json.loads(pathlib.Path(FLAGS.from_results).read_text(encoding="utf-8"))
        if not results:
            raise app.UsageError(
                f"--from_results must name a file with at least one run. Received: --from_results={FLAGS.from_results}"
            )
        FLAGS.num_seeds = len({r["seed"] for r in results})
        correlations = [c for c in correlations if any(r["correlation"] == c for r in results)]
        logging.info("Read %d runs (%d seeds) from %s", len(results), FLAGS.num_seeds, FLAGS.from_results)
        recorded_epochs = {len(r["test_curve"]) for r in results}
        if recorded_epochs != {FLAGS.epochs}:
            raise ValueError(
                f"{FLAGS.from_results} contains runs of {sorted(recorded_epochs)} epochs but --epochs={FLAGS.epochs}. "
                "Pass the flags of the run that wrote the file."
            )
    for seed in range(0 if FLAGS.from_results else FLAGS.num_seeds):
        for correlation in correlations:
            for model_name in models:
                result = train_one(model_name, correlation, seed, bottom_units)
                results.append(result)
                elapsed = time.perf_counter() - started
                logging.info(
                    "[%d/%d] %s, correlation %.2f, seed %d: test MSE %.4f (%.0f s elapsed, ~%.0f s left)",
                    len(results), total, model_name, correlation, seed, result["test_loss"],
                    elapsed, elapsed / len(results) * (total - len(results)),
                )  # fmt: skip
        # Save after every seed so that a stopped run keeps its results.
        results_file.write_text(json.dumps(results), encoding="utf-8")
    seconds = time.perf_counter() - started

    table = summarize(results, correlations, models)
    params = {name: next(r["params"] for r in results if r["model"] == name) for name in models}
    print(f"\nTest MSE (mean of 2 tasks), mean ± std over {FLAGS.num_seeds} seeds")
    print("| model | params | " + " | ".join(f"corr. {c}" for c in correlations) + " |")
    for model_name in models:
        cells = [f"{table[model_name][c][0]:.4f} ± {table[model_name][c][1]:.4f}" for c in correlations]
        print(f"| {MODEL_LABELS[model_name]} | {params[model_name]} | " + " | ".join(cells) + " |")

    image_dir = REPO_ROOT / "docs" / "images" if FLAGS.write_docs else output_dir
    paths = plot_results(results, table, correlations, models, image_dir)
    logging.info("Plots written to %s", image_dir)
    if FLAGS.write_docs:
        from benchmarks.report import REPRODUCTIONS_PAGE, write_section

        command = "python examples/mmoe_synthetic.py " + " ".join(
            flag
            for flag in _non_default_flags()
            if not flag.startswith(("--write_docs", "--from_results", "--output_dir", "--overwrite", "--nooverwrite"))
        )
        if FLAGS.from_results:
            # The training time of the original run is not stored in results.json.
            seconds = float("nan")
        markdown = markdown_report(
            results, table, correlations, models, params, paths, command.strip() + " --write_docs", seconds
        )
        write_section(REPRODUCTIONS_PAGE, "mmoe_synthetic", markdown)
        logging.info("Section mmoe_synthetic written to %s", REPRODUCTIONS_PAGE)


def _non_default_flags():
    """Return the flags given on the command line, as `--name=value` strings."""
    return [flag.serialize() for flag in FLAGS.get_flags_for_module(sys.modules[__name__]) if flag.present]


if __name__ == "__main__":
    example_flags.run(main)
