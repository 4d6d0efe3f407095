"""Census experiments of Ma et al. (KDD 2018): single-task, Shared-Bottom, OMoE, MMoE, PLE.

Trains every model on both task groups of UCI Adult and of UCI Census-Income (KDD), for
several seeds. Adult uses its official train/test split, with 10% of the training file
held out for validation. The script reports the test AUC of each task as mean ± standard
deviation over seeds, and the parameter count of each model.

Task group 1 is (income above 50K, never married), task group 2 is (education at college
level or above, never married). Only the 99,762-row test file of Census-Income (KDD) is
available here, so it is split 50/25/25 into train, validation and test with seed 0 for
every run; the model seed changes the initial weights and the shuffling only.

Sizes: 8 experts of 16 units (PLE: 4 task and 4 shared experts per level, 2 levels),
towers of 8 units, a 128-unit Shared-Bottom layer, embeddings of 4, Adam 1e-3, batch 512.
The single-task baseline trains one 128-unit MLP per task.

    python examples/mmoe_census.py                   # 5 seeds, both data sets
    python examples/mmoe_census.py --quick           # 2 seeds, small data, about a minute
    python examples/mmoe_census.py --write_docs      # also update docs/reproductions.md
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

MODEL_LABELS = {
    "single_task": "Single-task",
    "shared_bottom": "Shared-Bottom",
    "omoe": "OMoE",
    "mmoe": "MMoE",
    "ple": "PLE",
}

DATASETS = ("adult", "kdd")
TASK_GROUPS = ("1", "2")

flags.DEFINE_list("datasets", list(DATASETS), "Census data sets: adult, kdd.")
flags.DEFINE_list("task_groups", list(TASK_GROUPS), "Task groups: 1 (income), 2 (college education).")
flags.DEFINE_list("models", list(MODEL_LABELS), f"Models to train, from {', '.join(MODEL_LABELS)}.")
flags.DEFINE_integer("num_seeds", 5, "Seeds per model (seeds 0, 1, ...).", lower_bound=1)
flags.DEFINE_integer("epochs", 10, "Training epochs.", lower_bound=1)
flags.DEFINE_integer("batch_size", 512, "Examples per training batch.", lower_bound=1)
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.")
flags.DEFINE_integer(
    "num_experts", 8, "Experts of MMoE and OMoE; PLE gets half per task and half shared.", lower_bound=1
)
flags.DEFINE_integer("expert_units", 16, "Units of each expert.", lower_bound=1)
flags.DEFINE_integer("tower_units", 8, "Units of each task tower's hidden layer.", lower_bound=1)
flags.DEFINE_integer(
    "bottom_units", 128, "Units of the Shared-Bottom and single-task hidden layer.", lower_bound=1
)
flags.DEFINE_integer(
    "steps_per_execution", 8, "Training steps run per call into TensorFlow.", lower_bound=1
)
flags.DEFINE_integer(
    "max_train_examples", None, "Use at most this many training examples.", lower_bound=1
)
flags.DEFINE_string(
    "data_dir",
    None,
    "Folder with the data files, passed to the loaders as it is, as census_income.py does. "
    "When it is set, only DIR and DIR/uci-adult (Adult) or DIR/census-income-kdd (KDD) are "
    "searched. Without it, Adult comes from the copy in the package, and KDD from "
    "$MTL_LAYERS_DATA_DIR, else ../shared/data beside the repository, else the download "
    "cache.",
)
flags.DEFINE_bool(
    "quick",
    False,
    "2 seeds, 3000 training examples, 2 epochs, Adult task group 1, single-task and MMoE: "
    "checks that the script runs. Flags given on the command line keep their values.",
)
flags.DEFINE_string(
    "output_dir", "runs/mmoe_census", "Folder of the results JSON and plots, created when missing."
)
flags.DEFINE_bool(
    "overwrite",
    False,
    "Replace an existing results.json in --output_dir. Without it the script stops before "
    "training when the file exists.",
)
flags.DEFINE_bool("write_docs", False, "Write the gate plot to docs/images/ and the tables to docs/reproductions.md.")
flags.DEFINE_string("from_results", None, "Skip training and report the runs in this results.json file.")
example_flags.require_choices("datasets", DATASETS)
example_flags.require_choices("task_groups", TASK_GROUPS)
example_flags.require_choices("models", list(MODEL_LABELS))
example_flags.require_number("learning_rate", 0.0, include_low=False)
example_flags.require_results_file()

FLAGS = flags.FLAGS


def default_data_dir():
    """Return the `data_dir` for the loaders: --data_dir, else ../shared/data, else None.

    The loaders read $MTL_LAYERS_DATA_DIR themselves, so ../shared/data is used only when
    neither --data_dir nor that variable is set.
    """
    import os

    if FLAGS.data_dir:
        return pathlib.Path(FLAGS.data_dir)
    if os.environ.get("MTL_LAYERS_DATA_DIR"):
        return None
    shared = REPO_ROOT.parent / "shared" / "data"
    return shared if shared.is_dir() else None


def load(dataset: str, task_group: int):
    """Load one census data set for one task group, with the split seed fixed to 0."""
    from mtl_layers.datasets import census

    tower_units = (FLAGS.tower_units,)
    if dataset == "adult":
        # Without --data_dir, Adult comes from the copy in the package.
        return census.load_adult(
            task_group=task_group, seed=0, data_dir=FLAGS.data_dir, tower_units=tower_units
        )
    return census.load_census_kdd(
        task_group=task_group, data_dir=default_data_dir(), seed=0, tower_units=tower_units
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


def build(model_name: str, data, tasks):
    """Build and compile one model for `tasks` on the data set's raw features."""
    import mtl_layers as mtl
    from mtl_layers.compat import keras

    if model_name in ("single_task", "shared_bottom"):
        model = mtl.models.shared_bottom(tasks, data.feature_specs, bottom_units=(FLAGS.bottom_units,))
    elif model_name == "omoe":
        model = mtl.models.omoe(
            tasks, data.feature_specs, num_experts=FLAGS.num_experts, expert_units=FLAGS.expert_units
        )
    elif model_name == "mmoe":
        model = mtl.models.mmoe(
            tasks, data.feature_specs, num_experts=FLAGS.num_experts, expert_units=FLAGS.expert_units
        )
    elif model_name == "ple":
        model = mtl.models.ple(
            tasks,
            data.feature_specs,
            num_task_experts=max(1, FLAGS.num_experts // 2),
            num_shared_experts=max(1, FLAGS.num_experts // 2),
            expert_units=FLAGS.expert_units,
        )
    else:
        raise ValueError(f"Unknown model {model_name!r} in --models. Use {sorted(MODEL_LABELS)}.")
    mtl.tasks.compile_for_tasks(
        model,
        tasks,
        optimizer=keras.optimizers.Adam(FLAGS.learning_rate),
        steps_per_execution=FLAGS.steps_per_execution,
    )
    return model


def gate_weights(model, data, tasks):
    """Return MMoE's mean gate weight per task and expert on the test split."""
    import numpy as np

    from mtl_layers.compat import keras

    encoder = keras.Model(model.inputs, model.get_layer("encoded_features").output)
    encoded = encoder.predict(data.test.to_dataset(8192), verbose=0)
    weights = {}
    for task in tasks:
        logits = np.asarray(model.get_layer(f"{task.name}_gate").logits_layer(encoded), np.float64)
        logits -= logits.max(axis=-1, keepdims=True)
        probabilities = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
        weights[task.name] = probabilities.mean(axis=0).tolist()
    return weights


def train_and_evaluate(model_name, data, train, tasks, seed):
    """Train one model on `tasks`; return its test AUC per task and its parameter count."""
    import mtl_layers as mtl
    from mtl_layers.compat import keras

    keras.utils.set_random_seed(seed)
    model = build(model_name, data, tasks)
    task_names = [task.name for task in tasks]

    def select(split):
        from mtl_layers.datasets.census import Split

        return Split(features=split.features, labels={name: split.labels[name] for name in task_names})

    model.fit(
        select(train).to_dataset(FLAGS.batch_size, shuffle=True, seed=seed),
        epochs=FLAGS.epochs,
        verbose=0,
        callbacks=[mtl.callbacks.StopOnNonFiniteLoss()],
    )
    predictions = model.predict(select(data.test).to_dataset(8192), verbose=0)
    auc = {name: mtl.evaluation.roc_auc(data.test.labels[name], predictions[name]) for name in task_names}
    extra = {"gates": gate_weights(model, data, tasks)} if model_name == "mmoe" else {}
    return auc, int(model.count_params()), extra


def run_setting(dataset, task_group, models, num_seeds, progress, data=None):
    """Train every model for every seed on one data set and task group.

    `data` is what `load(dataset, task_group)` returns, if it was already loaded.
    """
    data = load(dataset, task_group) if data is None else data
    train = truncate(data.train, FLAGS.max_train_examples)
    logging.info(
        "%s, task group %d: %d train, %d test examples. %s",
        data.name, task_group, len(train), len(data.test), data.description,
    )  # fmt: skip
    results = []
    for seed in range(num_seeds):
        for model_name in models:
            task_lists = [[task] for task in data.tasks] if model_name == "single_task" else [data.tasks]
            auc, params, extra = {}, 0, {}
            for tasks in task_lists:
                task_auc, task_params, task_extra = train_and_evaluate(model_name, data, train, tasks, seed)
                auc.update(task_auc)
                params += task_params
                extra.update(task_extra)
            results.append(
                {"dataset": dataset, "task_group": task_group, "model": model_name, "seed": seed,
                 "auc": auc, "params": params, **extra}
            )  # fmt: skip
            progress(results[-1])
    return data, results


def summarize(results):
    """Return `{(dataset, group, model): {"params", task: (mean, std)}}` over seeds."""
    import numpy as np

    table = {}
    for result in results:
        key = (result["dataset"], result["task_group"], result["model"])
        entry = table.setdefault(key, {"params": result["params"], "auc": {}})
        for task, auc in result["auc"].items():
            entry["auc"].setdefault(task, []).append(auc)
    for entry in table.values():
        entry["auc"] = {task: (float(np.mean(v)), float(np.std(v)), len(v)) for task, v in entry["auc"].items()}
    return table


def markdown_tables(table, settings, descriptions, models) -> list:
    """Return Markdown lines with one AUC table per data set and task group."""
    lines = []
    for dataset, task_group in settings:
        keys = [(dataset, task_group, model) for model in models if (dataset, task_group, model) in table]
        if not keys:
            continue
        tasks = list(table[keys[0]]["auc"])
        lines += [
            f"### {'UCI Adult' if dataset == 'adult' else 'UCI Census-Income (KDD)'}, task group {task_group}",
            "",
            descriptions[(dataset, task_group)],
            "",
            "| model | params | " + " | ".join(f"AUC {task}" for task in tasks) + " |",
            "|---|---|" + "---|" * len(tasks),
        ]
        for key in keys:
            entry = table[key]
            cells = [f"{entry['auc'][task][0]:.4f} ± {entry['auc'][task][1]:.4f}" for task in tasks]
            lines.append(f"| {MODEL_LABELS[key[2]]} | {entry['params']:,} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def plot_gates(results, image_path: pathlib.Path):
    """Plot MMoE's mean gate weights per task for each data set and task group (seed 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    runs = [r for r in results if r["model"] == "mmoe" and r["seed"] == 0]
    if not runs:
        return None
    figure, axes = plt.subplots(1, len(runs), figsize=(4 * len(runs), 2.2))
    axes = np.atleast_1d(axes)
    for axis, run in zip(axes, runs):
        tasks = list(run["gates"])
        matrix = np.array([run["gates"][task] for task in tasks])
        image = axis.imshow(matrix, vmin=0, vmax=max(0.5, matrix.max()), cmap="viridis", aspect="auto")
        axis.set_yticks(range(len(tasks)), tasks, fontsize=8)
        axis.set_xlabel("expert")
        axis.set_title(f"{run['dataset']}, group {run['task_group']}", fontsize=9)
    figure.colorbar(image, ax=list(axes))
    image_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(image_path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return image_path


# Quick mode shrinks the run so that it finishes in about a minute.
QUICK_FLAGS = {
    "num_seeds": 2,
    "epochs": 2,
    "batch_size": 128,
    "max_train_examples": 3000,
    "datasets": ["adult"],
    "task_groups": ["1"],
    "models": ["single_task", "mmoe"],
}


def main(argv):
    del argv
    if FLAGS.quick:
        example_flags.apply_quick_mode(QUICK_FLAGS)
    settings = [(dataset, int(group)) for dataset in FLAGS.datasets for group in FLAGS.task_groups]

    results_file = example_flags.results_path(bool(FLAGS.from_results), FLAGS.overwrite)
    output_dir = results_file.parent
    total = len(settings) * FLAGS.num_seeds * len(FLAGS.models)
    started = time.perf_counter()
    all_results = []
    descriptions = {}

    def progress(result):
        all_results.append(result)
        elapsed = time.perf_counter() - started
        aucs = ", ".join(f"{task} {auc:.4f}" for task, auc in result["auc"].items())
        logging.info(
            "[%d/%d] %s group %d, %s, seed %d: AUC %s (%.0f s elapsed, ~%.0f s left)",
            len(all_results), total, result["dataset"], result["task_group"], result["model"],
            result["seed"], aucs, elapsed, elapsed / len(all_results) * (total - len(all_results)),
        )  # fmt: skip
        results_file.write_text(json.dumps(all_results), encoding="utf-8")

    if FLAGS.from_results:
        all_results = json.loads(pathlib.Path(FLAGS.from_results).read_text(encoding="utf-8"))
        if not all_results:
            raise app.UsageError(
                f"--from_results must name a file with at least one run. Received: --from_results={FLAGS.from_results}"
            )
        FLAGS.num_seeds = len({result["seed"] for result in all_results})
        for dataset, task_group in settings:
            descriptions[(dataset, task_group)] = load(dataset, task_group).description
    else:
        # Each data set is read once before any training, so that a missing or damaged
        # file stops the run at once, not after the models of the data sets before it.
        first_group = {}
        for dataset, task_group in settings:
            first_group.setdefault(dataset, task_group)
        loaded = {(dataset, group): load(dataset, group) for dataset, group in first_group.items()}
        for dataset, task_group in settings:
            data, _ = run_setting(
                dataset, task_group, FLAGS.models, FLAGS.num_seeds, progress,
                data=loaded.pop((dataset, task_group), None),
            )  # fmt: skip
            descriptions[(dataset, task_group)] = data.description
    seconds = time.perf_counter() - started

    table = summarize(all_results)
    lines = markdown_tables(table, settings, descriptions, FLAGS.models)
    print("\nTest AUC, mean ± std over seeds\n")
    print("\n".join(lines))

    image_dir = REPO_ROOT / "docs" / "images" if FLAGS.write_docs else output_dir
    gate_path = plot_gates(all_results, image_dir / "mmoe_census_gates.png")
    if FLAGS.write_docs:
        from benchmarks.report import REPRODUCTIONS_PAGE, machine_description, write_section

        flags_given = [
            flag.serialize()
            for flag in FLAGS.get_flags_for_module(sys.modules[__name__])
            if flag.present and flag.name not in ("from_results", "output_dir", "overwrite")
        ]
        command = " ".join(["python examples/mmoe_census.py"] + flags_given)
        duration = "" if FLAGS.from_results else f"{seconds / 60:.0f} min "
        header = [
            "## MMoE paper: census experiments",
            "",
            f"Command: `{command}` ({duration}on {machine_description()}).",
            "",
            f"{FLAGS.num_seeds} seeds (model seeds; the data split is fixed), {FLAGS.epochs} epochs, Adam {FLAGS.learning_rate:g}, batch "
            f"{FLAGS.batch_size}; 8 experts of 16 units, towers of 8, Shared-Bottom and single-task "
            "layer of 128 units, embeddings of 4. AUC is the exact ROC AUC on the test split, "
            "mean ± standard deviation over seeds. Single-task params are the sum of the two models.",
            "",
        ]
        if gate_path is not None:
            header_gate = ["![MMoE mean gate weight per task and expert, seed 0](images/mmoe_census_gates.png)", ""]
        else:
            header_gate = []
        write_section(REPRODUCTIONS_PAGE, "mmoe_census", "\n".join(header + lines + header_gate))
        logging.info("Section mmoe_census written to %s", REPRODUCTIONS_PAGE)


if __name__ == "__main__":
    example_flags.run(main)
