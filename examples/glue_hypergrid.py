"""Compare single-task, vanilla multi-task and HyperGrid transformers on five GLUE tasks.

Trains small encoder transformers from scratch (no pretrained weights) on CoLA, MRPC,
RTE, STS-B and SST-2 and reports each task's standard GLUE dev metric:

- single-task: one model per task (plain Dense feed-forward projections);
- vanilla: one multi-task model with plain Dense projections;
- HyperGrid LG and GL: one multi-task model whose feed-forward output projections are
  `HyperGridDense` in the given mode.

Every multi-task batch mixes tasks: each example's task is drawn with probability
proportional to (training set size)^`--mixing_alpha`, and a model's output for a task is
trained only on that task's examples. Each single-task model trains on as many
examples of its task as the multi-task models see, so (a) costs as much compute in
total as one multi-task model. STS-B scores are divided by 5 for training.

    python examples/glue_hypergrid.py --write_docs    # the full run (3 seeds)
    python examples/glue_hypergrid.py --quick         # a smoke run in under a minute

The data folder is `--data_dir`, else `$MTL_LAYERS_DATA_DIR/glue`.
"""

import json
import pathlib
import sys
import time

import numpy as np
from absl import app, flags, logging

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
# The shared flag checks sit next to this script. Python puts the script's folder on the
# path when it runs the script, but not when another program imports the file.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import example_flags  # noqa: E402

flags.DEFINE_string("data_dir", None, "GLUE folder with <TASK>/{train,dev}.tsv; defaults to $MTL_LAYERS_DATA_DIR/glue.")
flags.DEFINE_bool("download", False, "Download missing tasks from the official GLUE archives.")
flags.DEFINE_bool(
    "quick",
    False,
    "Smoke run: 256 training and 128 dev examples per task, tiny models, 2 seeds. Flags "
    "given on the command line keep their values.",
)
flags.DEFINE_integer("seeds", 3, "Number of seeds (0, 1, ...).", lower_bound=1)
flags.DEFINE_integer("steps", 800, "Training steps of each multi-task model.", lower_bound=1)
flags.DEFINE_integer("batch_size", 64, "Examples per training batch.", lower_bound=1)
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.")
flags.DEFINE_float("mixing_alpha", 0.5, "Task sampling probability is proportional to size**alpha.")
# A pair needs at least one token of each sentence and the separator.
flags.DEFINE_integer("sequence_length", 48, "Token ids per example (pairs share it).", lower_bound=3)
# Padding, unknown and separator take 3 ids, so 4 leaves room for one word.
flags.DEFINE_integer(
    "max_tokens", 8000, "Vocabulary size, including padding, unknown and separator ids.", lower_bound=4
)
flags.DEFINE_integer("d_model", 64, "Hidden width of the transformers.", lower_bound=1)
flags.DEFINE_integer("d_ff", 128, "Inner width of the feed-forward blocks.", lower_bound=1)
flags.DEFINE_integer("num_heads", 4, "Attention heads (divide d_model).", lower_bound=1)
flags.DEFINE_integer("num_layers", 2, "Encoder blocks.", lower_bound=1)
flags.DEFINE_integer("block_rows", 16, "HyperGrid block rows (divide d_ff).", lower_bound=1)
flags.DEFINE_integer("block_cols", 16, "HyperGrid block columns (divide d_model).", lower_bound=1)
flags.DEFINE_float("dropout", 0.1, "Dropout rate in the encoder blocks.")
flags.DEFINE_string("output_json", None, "Write every run's metrics to this JSON file.")
flags.DEFINE_bool(
    "overwrite",
    False,
    "Replace an existing --output_json file. Without it the script stops before training "
    "when the file exists.",
)
flags.DEFINE_bool("write_docs", False, "Write the result table into docs/reproductions.md.")
example_flags.require_number("learning_rate", 0.0, include_low=False)
example_flags.require_number("mixing_alpha", 0.0)
example_flags.require_number("dropout", 0.0, 1.0, include_high=False)

FLAGS = flags.FLAGS
SETTINGS = ("single-task", "vanilla", "HyperGrid LG", "HyperGrid GL")
REGRESSION_SCALE = 5.0


def _task_key(task: str) -> str:
    # Model output names must be identifiers.
    return task.lower().replace("-", "")


def prepare_data(glue, tasks):
    """Load, tokenize and encode the train and dev splits of every task."""
    data = glue.load_glue(tasks, data_dir=FLAGS.data_dir, download=FLAGS.download)
    max_train, max_dev = (256, 128) if FLAGS.quick else (None, None)
    texts = []
    for task in tasks:
        train = data[task]["train"]
        texts += train.sentences[:max_train] + (train.second_sentences or [])[:max_train]
    tokenizer = glue.PairTokenizer(max_tokens=FLAGS.max_tokens).fit(texts)

    encoded = {}
    for task in tasks:
        encoded[task] = {}
        for split, limit in (("train", max_train), ("dev", max_dev)):
            part = data[task][split]
            second = part.second_sentences[:limit] if part.second_sentences else None
            ids = tokenizer.encode(part.sentences[:limit], second, FLAGS.sequence_length)
            labels = part.labels[:limit].astype("float32")
            if glue.KINDS[task] == "regression" and split == "train":
                labels = labels / REGRESSION_SCALE
            encoded[task][split] = (ids, labels)
    logging.info("Vocabulary of %d ids from %d training texts", tokenizer.vocab_size, len(texts))
    return encoded, tokenizer.vocab_size


def sample_batches(encoded, tasks, task_indices, steps, rng):
    """Draw `steps` mixed batches: a task per example, then an example of that task."""
    sizes = np.array([len(encoded[task]["train"][1]) for task in tasks], dtype="float64")
    probabilities = sizes**FLAGS.mixing_alpha
    probabilities /= probabilities.sum()
    count = steps * FLAGS.batch_size
    drawn_tasks = rng.choice(len(tasks), size=count, p=probabilities)
    token_ids = np.zeros((count, FLAGS.sequence_length), "int32")
    labels = {_task_key(task): np.zeros(count, "float32") for task in tasks}
    weights = {_task_key(task): np.zeros(count, "float32") for task in tasks}
    for position, task in enumerate(tasks):
        rows = np.flatnonzero(drawn_tasks == position)
        ids, task_labels = encoded[task]["train"]
        picks = rng.integers(0, len(task_labels), size=len(rows))
        token_ids[rows] = ids[picks]
        labels[_task_key(task)][rows] = task_labels[picks]
        weights[_task_key(task)][rows] = 1.0
    task_ids = np.array([task_indices[tasks[index]] for index in drawn_tasks], "int32")
    return {"token_ids": token_ids, "task_id": task_ids}, labels, weights, probabilities


def train_and_evaluate(mtl, glue, keras, encoded, vocab_size, tasks, feed_forward, mode, steps, seed):
    """Train one model on `tasks` and return ({task: metrics}, parameter count)."""
    keras.utils.set_random_seed(seed)
    specs = [mtl.tasks.TaskSpec(_task_key(task), kind=glue.KINDS[task], tower_units=()) for task in tasks]
    model = mtl.models.hypergrid_transformer(
        specs,
        vocab_size=vocab_size,
        sequence_length=FLAGS.sequence_length,
        d_model=FLAGS.d_model,
        num_heads=FLAGS.num_heads,
        d_ff=FLAGS.d_ff,
        num_layers=FLAGS.num_layers,
        feed_forward=feed_forward,
        mode=mode,
        block_shape=(FLAGS.block_rows, FLAGS.block_cols),
        dropout=FLAGS.dropout,
    )
    model.compile(
        keras.optimizers.Adam(FLAGS.learning_rate),
        loss={spec.name: spec.loss() for spec in specs},
        # A few eager steps cost less than tracing the training function.
        run_eagerly=FLAGS.quick,
    )
    task_indices = {task: index for index, task in enumerate(tasks)}
    inputs, labels, weights, _ = sample_batches(
        encoded, tasks, task_indices, steps, np.random.default_rng(seed)
    )
    model.fit(
        inputs, labels, sample_weight=weights, batch_size=FLAGS.batch_size, epochs=1,
        shuffle=False, verbose=0,
    )

    # One prediction call over every task's dev set; each task reads its own head's rows.
    dev_ids = [encoded[task]["dev"][0] for task in tasks]
    dev_inputs = {
        "token_ids": np.concatenate(dev_ids),
        "task_id": np.concatenate(
            [np.full(len(ids), task_indices[task], "int32") for task, ids in zip(tasks, dev_ids)]
        ),
    }
    predictions = model.predict(dev_inputs, batch_size=1024, verbose=0)
    results, offset = {}, 0
    for task, ids in zip(tasks, dev_ids):
        rows = slice(offset, offset + len(ids))
        offset += len(ids)
        results[task] = glue.compute_metrics(
            task, encoded[task]["dev"][1], predictions[_task_key(task)][rows]
        )
    return results, int(model.count_params())


def run_seed(mtl, glue, keras, encoded, vocab_size, tasks, seed):
    """Train every setting once with `seed` and return {setting: (metrics, parameters)}."""
    runs = {}
    sizes = np.array([len(encoded[task]["train"][1]) for task in tasks], dtype="float64")
    probabilities = sizes**FLAGS.mixing_alpha / np.sum(sizes**FLAGS.mixing_alpha)

    single_metrics, single_parameters = {}, 0
    for task, probability in zip(tasks, probabilities):
        steps = max(1, int(round(FLAGS.steps * probability)))
        start = time.time()
        metrics, parameters = train_and_evaluate(
            mtl, glue, keras, encoded, vocab_size, [task], "dense", "LG", steps, seed
        )
        single_metrics.update(metrics)
        single_parameters += parameters
        logging.info("seed %d single-task %s (%d steps, %.0f s): %s", seed, task, steps, time.time() - start, metrics[task])
    runs["single-task"] = (single_metrics, single_parameters)

    for setting, feed_forward, mode in (
        ("vanilla", "dense", "LG"),
        ("HyperGrid LG", "hypergrid", "LG"),
        ("HyperGrid GL", "hypergrid", "GL"),
    ):
        start = time.time()
        runs[setting] = train_and_evaluate(
            mtl, glue, keras, encoded, vocab_size, tasks, feed_forward, mode, FLAGS.steps, seed
        )
        logging.info(
            "seed %d %s (%.0f s): %s", seed, setting, time.time() - start,
            {task: round(values["score"], 4) for task, values in runs[setting][0].items()},
        )
    return runs


def summarize(all_runs, tasks):
    """Return {setting: {column: (mean, std)}} over seeds, plus parameter counts."""
    summary = {}
    for setting in SETTINGS:
        per_seed = [runs[setting][0] for runs in all_runs]
        columns = {}
        for task in tasks:
            for metric in per_seed[0][task]:
                if metric == "score" and len(per_seed[0][task]) == 2:
                    continue  # a one-metric task: its score repeats that metric
                values = [seed_metrics[task][metric] for seed_metrics in per_seed]
                columns[f"{task} {metric}"] = (float(np.mean(values)), float(np.std(values)))
        averages = [np.mean([seed_metrics[task]["score"] for task in tasks]) for seed_metrics in per_seed]
        columns["average"] = (float(np.mean(averages)), float(np.std(averages)))
        summary[setting] = {"columns": columns, "parameters": all_runs[0][setting][1]}
    return summary


def markdown_table(summary, tasks, seconds, command):
    """Render the summary as the docs section."""
    from benchmarks import report

    metric_names = {"matthews": "MCC", "f1": "F1", "accuracy": "acc", "pearson": "Pearson", "spearman": "Spearman"}
    columns = [name for name in summary["vanilla"]["columns"] if name != "average"]
    header = ["setting"] + [f"{name.split()[0]} {metric_names.get(name.split()[1], name.split()[1])}" for name in columns]
    header += ["average", "parameters"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for setting in SETTINGS:
        cells = [setting]
        for name in columns + ["average"]:
            mean, std = summary[setting]["columns"][name]
            cells.append(f"{100 * mean:.1f} ± {100 * std:.1f}")
        cells.append(f"{summary[setting]['parameters']:,}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(
        [
            "## HyperGrid transformers on five GLUE tasks",
            "",
            f"Command: `{command}` ({seconds / 60:.0f} min on {report.machine_description()}).",
            "",
            f"Small encoder transformers trained from scratch (no pretraining): {FLAGS.num_layers} "
            f"blocks, d_model {FLAGS.d_model}, d_ff {FLAGS.d_ff}, {FLAGS.num_heads} heads, "
            f"{FLAGS.sequence_length} tokens, a {FLAGS.max_tokens}-id TextVectorization vocabulary "
            f"fit on the training text, Adam {FLAGS.learning_rate}, batch {FLAGS.batch_size}, "
            f"{FLAGS.steps} steps per multi-task model with tasks mixed in each batch "
            f"(sampling ∝ size^{FLAGS.mixing_alpha}); each single-task model trains on as many "
            f"examples of its task as a multi-task model sees. HyperGrid blocks are "
            f"{FLAGS.block_rows}×{FLAGS.block_cols}. GLUE dev metrics ×100, mean ± standard "
            f"deviation over {len(SEED_LIST)} seeds; the average is over tasks of each task's "
            "score (the mean of its metrics). Parameters: the single-task row sums five models, "
            "most of each being its token embedding table.",
            "",
            *lines,
        ]
    )


SEED_LIST = []


# Quick mode makes a smoke run of under a minute.
QUICK_FLAGS = {
    "seeds": 2,
    "steps": 8,
    "batch_size": 16,
    "sequence_length": 32,
    "max_tokens": 2000,
    "d_model": 16,
    "d_ff": 32,
    "num_heads": 2,
    "num_layers": 1,
    "block_rows": 8,
    "block_cols": 8,
}


def check_model_shape():
    """Raise `app.UsageError` unless the heads and HyperGrid blocks divide the widths they split."""
    for divisor, width in (("num_heads", "d_model"), ("block_rows", "d_ff"), ("block_cols", "d_model")):
        if FLAGS[width].value % FLAGS[divisor].value:
            raise app.UsageError(
                f"--{divisor} must divide --{width}. Received: --{divisor}={FLAGS[divisor].value}, "
                f"--{width}={FLAGS[width].value}"
            )


def main(argv):
    del argv
    if FLAGS.quick:
        example_flags.apply_quick_mode(QUICK_FLAGS)
    check_model_shape()
    example_flags.check_output_file("output_json", overwrite=FLAGS.overwrite)
    import mtl_layers as mtl
    from mtl_layers.compat import keras
    from mtl_layers.datasets import glue

    start = time.time()
    tasks = list(glue.TASK_NAMES)
    encoded, vocab_size = prepare_data(glue, tasks)
    SEED_LIST[:] = list(range(FLAGS.seeds))
    all_runs = []
    for seed in SEED_LIST:
        all_runs.append(run_seed(mtl, glue, keras, encoded, vocab_size, tasks, seed))
    seconds = time.time() - start
    summary = summarize(all_runs, tasks)

    command = "python examples/glue_hypergrid.py" + (" --quick" if FLAGS.quick else " --write_docs")
    table = markdown_table(summary, tasks, seconds, command)
    print(table)
    if FLAGS.output_json:
        serializable = [
            {setting: {"metrics": runs[setting][0], "parameters": runs[setting][1]} for setting in SETTINGS}
            for runs in all_runs
        ]
        pathlib.Path(FLAGS.output_json).write_text(json.dumps(serializable, indent=2), encoding="utf-8")
    if FLAGS.write_docs:
        from benchmarks import report

        report.write_section(report.REPRODUCTIONS_PAGE, "glue_hypergrid", table)
        logging.info("Wrote the table to %s", report.REPRODUCTIONS_PAGE)


if __name__ == "__main__":
    example_flags.run(main)
