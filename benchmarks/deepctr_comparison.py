"""Side by side with DeepCTR 0.9.4: AUC, training speed, latency and expert similarity.

Trains this library's MMoE and Shared-Bottom and DeepCTR's `MMOE` and `SharedBottom` on
the same census split, feature handling, sizes, optimiser, epochs and seeds, and reports
per model and library:

* the exact test ROC AUC of each task, mean ± standard deviation over seeds;
* training examples per second, measured over epochs 2.. (epoch 1 includes tracing);
* batch-1 prediction latency with `predict_on_batch`, median of repeated calls;
* expert similarity: the mean pairwise cosine similarity of the experts' first-layer
  kernels, at initialisation and after training (MMoE only).

DeepCTR runs in its own virtual environment, which the script creates on first use with
`python -m venv --system-site-packages` and `pip install --no-deps deepctr==0.9.4`, so it
reuses the installed TensorFlow and never changes the main environment. It runs in both
of its Keras modes: Keras 3 and tf_keras (`TF_USE_LEGACY_KERAS=1`); the comparison is
against the faster mode. `import deepctr` queries PyPI for newer versions, so the worker
blocks outgoing connections before it imports DeepCTR.

Feature handling is identical for both libraries. Categorical columns are indexed with
the training vocabulary (index 0 for unknown values) and embedded in 4 dimensions.
Numeric columns are standardised with the training mean and variance. This library runs
twice: on raw strings and numbers, with both steps inside the model (`FeatureSpec`), and
on the output of `mtl_layers.models.preprocess_features`, the same indices and
standardised numbers that DeepCTR takes, computed beforehand as its users do.

    python benchmarks/deepctr_comparison.py                 # Adult, task group 1, 5 seeds
    python benchmarks/deepctr_comparison.py --quick         # 2 seeds, small data
    python benchmarks/deepctr_comparison.py --write_docs    # also update docs/benchmarks.md
"""

import json
import os
import pathlib
import subprocess
import sys
import time

from absl import app, flags, logging

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
# `benchmarks.report` writes the docs section; it lives at the repository root.
sys.path.insert(0, str(REPO_ROOT))

DEEPCTR_VERSION = "0.9.4"
MODEL_LABELS = {"mmoe": "MMoE", "shared_bottom": "Shared-Bottom"}

flags.DEFINE_enum("dataset", "adult", ["adult", "kdd"], "Census data set.")
flags.DEFINE_integer("task_group", 1, "1: income and never married; 2: college education and never married.")
flags.DEFINE_list("models", ["mmoe", "shared_bottom"], "Models: mmoe, shared_bottom.")
flags.DEFINE_list("deepctr_modes", ["keras3", "tf_keras"], "Keras modes in which to run DeepCTR.")
flags.DEFINE_integer("num_seeds", 5, "Seeds per model (seeds 0, 1, ...).")
flags.DEFINE_integer("epochs", 10, "Training epochs.")
flags.DEFINE_integer("batch_size", 512, "Examples per training batch.")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.")
flags.DEFINE_integer("num_experts", 8, "Experts of MMoE.")
flags.DEFINE_integer("expert_units", 16, "Units of each expert.")
flags.DEFINE_integer("tower_units", 8, "Units of each task tower's hidden layer.")
flags.DEFINE_integer("bottom_units", 128, "Units of the Shared-Bottom layer.")
flags.DEFINE_integer("embedding_dim", 4, "Embedding size of the categorical features.")
flags.DEFINE_integer("steps_per_execution", 64, "Training steps per call into TensorFlow (this library, without XLA).")
flags.DEFINE_integer(
    "jit_steps_per_execution", 64, "Training steps per call into TensorFlow (this library, with XLA)."
)
flags.DEFINE_float(
    "embedding_init_stddev", 1e-4, "Embeddings of this library start N(0, stddev^2), DeepCTR's default init_std."
)
flags.DEFINE_float("embedding_l2", 1e-5, "L2 penalty on this library's embeddings, DeepCTR's default l2_reg_embedding.")
flags.DEFINE_bool(
    "packed", True, "Embed this library's categorical features from one table (`build_feature_inputs(packed=True)`)."
)
flags.DEFINE_bool("jit_compile", True, "Compile the training step of this library's preprocessed-input models with XLA.")
flags.DEFINE_integer("latency_calls", 200, "Timed batch-1 prediction calls per model.")
flags.DEFINE_integer("max_train_examples", None, "Use at most this many training examples.")
flags.DEFINE_string("data_dir", None, "Folder with the data files; defaults to $MTL_LAYERS_DATA_DIR.")
flags.DEFINE_string("venv_dir", str(REPO_ROOT / ".venv-deepctr"), "Virtual environment for DeepCTR.")
flags.DEFINE_string("output_dir", "runs/deepctr_comparison", "Folder of the data file and results.")
flags.DEFINE_bool("quick", False, "2 seeds, 2000 training examples, 2 epochs, DeepCTR under tf_keras only.")
flags.DEFINE_bool("write_docs", False, "Write the table to docs/benchmarks.md.")
flags.DEFINE_string(
    "from_results", None, "Skip training and report the runs in this results.json file; pass the run's other flags too."
)
flags.DEFINE_string("worker", None, "Internal: run DeepCTR on --worker_data and write --worker_output.")
flags.DEFINE_string("worker_data", None, "Internal: the .npz file the worker reads.")
flags.DEFINE_string("worker_output", None, "Internal: the JSON file the worker writes.")
flags.DEFINE_integer("worker_seed", None, "Internal: the one seed the worker trains.")

FLAGS = flags.FLAGS


# ---------------------------------------------------------------------------------------
# Measurements shared by both libraries.


def mean_pairwise_cosine(kernels) -> float:
    """Return the mean cosine similarity over all pairs of flattened expert kernels."""
    import numpy as np

    vectors = np.stack([np.ravel(kernel).astype(np.float64) for kernel in kernels])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    similarity = vectors @ vectors.T
    upper = np.triu_indices(len(vectors), k=1)
    return float(similarity[upper].mean())


class EpochTimer:
    """Keras callback factory that records the wall time and process CPU time of every epoch.

    CPU time counts the work of all of the process's threads, so other processes on a
    shared machine change it far less than they change wall time.
    """

    @staticmethod
    def create(keras):
        class _Timer(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.seconds = []
                self.cpu_seconds = []
                self._start = 0.0
                self._cpu_start = 0.0

            def on_epoch_begin(self, epoch, logs=None):
                self._start = time.perf_counter()
                self._cpu_start = time.process_time()

            def on_epoch_end(self, epoch, logs=None):
                self.seconds.append(time.perf_counter() - self._start)
                self.cpu_seconds.append(time.process_time() - self._cpu_start)

        return _Timer()


def examples_per_second(epoch_seconds, num_examples) -> float:
    """Return training throughput over epochs 2.. (over all epochs when there is one)."""
    timed = epoch_seconds[1:] or epoch_seconds
    return num_examples * len(timed) / sum(timed)


def batch_one_latency_ms(model, single_example, calls: int) -> float:
    """Return the median `predict_on_batch` time of one example, in milliseconds."""
    import numpy as np

    for _ in range(10):
        model.predict_on_batch(single_example)
    timings = []
    for _ in range(calls):
        start = time.perf_counter()
        model.predict_on_batch(single_example)
        timings.append(time.perf_counter() - start)
    return float(np.median(timings) * 1000)


def exact_auc(labels, scores) -> float:
    """Return the exact ROC AUC (Mann-Whitney statistic with average ranks for ties)."""
    from mtl_layers.evaluation import roc_auc

    return roc_auc(labels, scores)


# ---------------------------------------------------------------------------------------
# The DeepCTR worker: runs inside the DeepCTR virtual environment.


def block_network():
    """Make every outgoing connection fail, so `import deepctr` cannot reach PyPI."""
    import socket

    def refuse(*args, **kwargs):
        raise OSError("Network access is blocked in the DeepCTR benchmark worker.")

    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse
    socket.create_connection = refuse
    socket.getaddrinfo = refuse


def run_deepctr_worker():
    """Train DeepCTR's models on the prepared arrays and write the measurements as JSON."""
    block_network()
    import numpy as np
    import tensorflow as tf

    from deepctr.feature_column import DenseFeat, SparseFeat
    from deepctr.models import MMOE, SharedBottom

    keras = tf.keras
    archive = np.load(FLAGS.worker_data, allow_pickle=False)
    meta = json.loads(str(archive["meta"]))
    columns = []
    for name in meta["categorical"]:
        columns.append(SparseFeat(name, vocabulary_size=meta["vocabulary_sizes"][name], embedding_dim=meta["embedding_dim"]))
    for name in meta["numeric"]:
        columns.append(DenseFeat(name, 1))
    names = meta["categorical"] + meta["numeric"]
    train_x = {name: archive[f"train_{name}"] for name in names}
    test_x = {name: archive[f"test_{name}"] for name in names}
    tasks = meta["tasks"]
    train_y = [archive[f"train_label_{task}"] for task in tasks]
    test_y = {task: archive[f"test_label_{task}"] for task in tasks}
    single = {name: values[:1] for name, values in test_x.items()}

    results = []
    for seed in [FLAGS.worker_seed]:
        for model_name in meta["models"]:
            keras.utils.set_random_seed(seed)
            if model_name == "mmoe":
                model = MMOE(
                    columns,
                    num_experts=meta["num_experts"],
                    expert_dnn_hidden_units=(meta["expert_units"],),
                    tower_dnn_hidden_units=(meta["tower_units"],),
                    task_types=["binary"] * len(tasks),
                    task_names=tasks,
                    seed=seed,
                )
            else:
                model = SharedBottom(
                    columns,
                    bottom_dnn_hidden_units=(meta["bottom_units"],),
                    tower_dnn_hidden_units=(meta["tower_units"],),
                    task_types=["binary"] * len(tasks),
                    task_names=tasks,
                    seed=seed,
                )
            model.compile(keras.optimizers.Adam(meta["learning_rate"]), loss=["binary_crossentropy"] * len(tasks))
            expert_kernels = lambda: [  # noqa: E731
                model.get_layer(f"expert_{index}").kernels[0].numpy() for index in range(meta["num_experts"])
            ]
            similarity_init = mean_pairwise_cosine(expert_kernels()) if model_name == "mmoe" else None
            timer = EpochTimer.create(keras)
            model.fit(
                train_x, train_y, batch_size=meta["batch_size"], epochs=meta["epochs"],
                shuffle=True, verbose=0, callbacks=[timer],
            )  # fmt: skip
            predictions = model.predict(test_x, batch_size=8192, verbose=0)
            auc = {task: exact_auc(test_y[task], predictions[index]) for index, task in enumerate(tasks)}
            result = {
                "library": f"deepctr_{meta['mode']}",
                "model": model_name,
                "seed": seed,
                "auc": auc,
                "params": int(model.count_params()),
                "examples_per_second": examples_per_second(timer.seconds, len(train_y[0])),
                "examples_per_cpu_second": examples_per_second(timer.cpu_seconds, len(train_y[0])),
                "latency_ms": batch_one_latency_ms(model, single, meta["latency_calls"]),
                "expert_similarity_init": similarity_init,
                "expert_similarity_trained": mean_pairwise_cosine(expert_kernels()) if model_name == "mmoe" else None,
                "load_average": os.getloadavg()[0],
            }
            print(json.dumps(result), flush=True)
            results.append(result)
    pathlib.Path(FLAGS.worker_output).write_text(json.dumps(results), encoding="utf-8")


# ---------------------------------------------------------------------------------------
# The main process: data, this library's models, DeepCTR's environment and the report.


def ensure_deepctr_venv(venv_dir: pathlib.Path) -> pathlib.Path:
    """Create the DeepCTR virtual environment if needed; return its Python executable."""
    python = venv_dir / "bin" / "python"
    probe = [str(python), "-c", f"import importlib.metadata as m; assert m.version('deepctr') == '{DEEPCTR_VERSION}'"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    logging.info("Creating %s with DeepCTR %s (pip, no dependencies).", venv_dir, DEEPCTR_VERSION)
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv_dir)], check=True)
    # --no-deps keeps the installed TensorFlow; DeepCTR's own dependencies (h5py, requests)
    # come from the system site packages.
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", f"deepctr=={DEEPCTR_VERSION}"],
        check=True,
    )
    check = subprocess.run(probe, capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(
            f"DeepCTR {DEEPCTR_VERSION} is not importable in {venv_dir} after installing it: "
            f"{check.stderr.strip()}. Delete the folder and run again."
        )
    return python


def load_data():
    """Load the census data set and task group chosen by the flags."""
    from mtl_layers.datasets import census

    tower_units = (FLAGS.tower_units,)
    if FLAGS.dataset == "adult":
        data = census.load_adult(task_group=FLAGS.task_group, seed=0, embedding_dim=FLAGS.embedding_dim, tower_units=tower_units)
    else:
        data_dir = FLAGS.data_dir or os.environ.get("MTL_LAYERS_DATA_DIR") or str(REPO_ROOT.parent / "shared" / "data")
        data = census.load_census_kdd(
            task_group=FLAGS.task_group,
            data_dir=pathlib.Path(data_dir) / "census-income-kdd",
            seed=0,
            embedding_dim=FLAGS.embedding_dim,
            tower_units=tower_units,
        )
    if FLAGS.max_train_examples is not None and FLAGS.max_train_examples < len(data.train):
        limit = FLAGS.max_train_examples
        data.train = census.Split(
            features={name: values[:limit] for name, values in data.train.features.items()},
            labels={name: values[:limit] for name, values in data.train.labels.items()},
        )
    return data


def encode_for_deepctr(data, mode: str, path: pathlib.Path):
    """Write the integer-indexed, standardised arrays and settings for one DeepCTR worker."""
    import numpy as np

    from mtl_layers.models import preprocess_features

    arrays = {}
    categorical, numeric, vocabulary_sizes = [], [], {}
    for split_name, split in (("train", data.train), ("test", data.test)):
        for name, values in preprocess_features(data.feature_specs, split.features).items():
            arrays[f"{split_name}_{name}"] = values
    for spec in data.feature_specs:
        if spec.kind == "numeric":
            numeric.append(spec.name)
        else:
            categorical.append(spec.name)
            vocabulary_sizes[spec.name] = len(spec.vocabulary) + 1
    tasks = [task.name for task in data.tasks]
    for task in tasks:
        arrays[f"train_label_{task}"] = data.train.labels[task]
        arrays[f"test_label_{task}"] = data.test.labels[task]
    meta = {
        "mode": mode, "categorical": categorical, "numeric": numeric,
        "vocabulary_sizes": vocabulary_sizes, "embedding_dim": FLAGS.embedding_dim, "tasks": tasks,
        "models": list(FLAGS.models), "num_seeds": FLAGS.num_seeds, "epochs": FLAGS.epochs,
        "batch_size": FLAGS.batch_size, "learning_rate": FLAGS.learning_rate,
        "num_experts": FLAGS.num_experts, "expert_units": FLAGS.expert_units,
        "tower_units": FLAGS.tower_units, "bottom_units": FLAGS.bottom_units,
        "latency_calls": FLAGS.latency_calls,
    }  # fmt: skip
    np.savez(path, meta=np.array(json.dumps(meta)), **arrays)


def training_dataset(split, batch_size: int, seed: int, fixed_batch_shape: bool = False):
    """Return shuffled batches of `split`, gathered from in-memory tensors.

    `in_memory_batches` shuffles with one op per epoch and gathers with one op per batch
    and column, which keeps the input pipeline off the training step's critical path.

    With `fixed_batch_shape` the shuffled epochs repeat without end and every batch is
    full, so an XLA-compiled step is compiled once instead of again for the smaller last
    batch. Batches then run across epoch boundaries; `fit` needs `steps_per_epoch`.
    """
    from mtl_layers.datasets.batching import in_memory_batches

    return in_memory_batches(
        split.features, split.labels, batch_size=batch_size, shuffle=True, seed=seed, repeat=fixed_batch_shape
    )


def build_ours(model_name, data, preprocessed: bool):
    """Build this library's model on raw features, or on `preprocess_features` output.

    Only the preprocessed model is compiled with XLA (`--jit_compile`): XLA cannot
    compile the string lookups of the raw-feature model.
    """
    import mtl_layers as mtl
    from mtl_layers.compat import keras

    jit_compile = FLAGS.jit_compile and preprocessed
    # The same embedding handling as DeepCTR's defaults (see the flags).
    embeddings = dict(
        packed=FLAGS.packed,
        embeddings_initializer=keras.initializers.RandomNormal(stddev=FLAGS.embedding_init_stddev),
        embeddings_regularizer=keras.regularizers.L2(FLAGS.embedding_l2) if FLAGS.embedding_l2 else None,
    )
    model_inputs, features = mtl.models.build_feature_inputs(
        data.feature_specs, preprocessed=preprocessed, **embeddings
    )
    if model_name == "mmoe":
        model = mtl.models.mmoe(
            data.tasks, features, num_experts=FLAGS.num_experts, expert_units=FLAGS.expert_units,
            model_inputs=model_inputs,
        )  # fmt: skip
    else:
        model = mtl.models.shared_bottom(
            data.tasks, features, bottom_units=(FLAGS.bottom_units,), model_inputs=model_inputs
        )
    mtl.tasks.compile_for_tasks(
        model, data.tasks, optimizer=keras.optimizers.Adam(FLAGS.learning_rate),
        steps_per_execution=FLAGS.jit_steps_per_execution if jit_compile else FLAGS.steps_per_execution,
        jit_compile=jit_compile,
        track_metrics=False,
    )  # fmt: skip
    return model


def run_ours(data, preprocessed: bool, seeds):
    """Train this library's models for every seed; return one result dict per run.

    With `preprocessed` the models read the output of `preprocess_features`, which are
    the same vocabulary indices and standardised numbers that DeepCTR reads. Otherwise
    they read the raw features and look them up and normalise them inside the model.
    """
    import mtl_layers as mtl
    from mtl_layers.compat import keras
    from mtl_layers.datasets.census import Split

    tasks = [task.name for task in data.tasks]
    if preprocessed:
        train = Split(
            features=mtl.models.preprocess_features(data.feature_specs, data.train.features, packed=FLAGS.packed),
            labels=data.train.labels,
        )
        test_inputs = mtl.models.preprocess_features(data.feature_specs, data.test.features, packed=FLAGS.packed)
        library = "mtl_layers_preprocessed"
    else:
        train, test_inputs = data.train, data.test.features
        library = "mtl_layers"
    test = Split(features=test_inputs, labels=data.test.labels)
    jit_compile = FLAGS.jit_compile and preprocessed
    single = {name: values[:1] for name, values in test_inputs.items()}
    results = []
    for seed in seeds:
        for model_name in FLAGS.models:
            keras.utils.set_random_seed(seed)
            model = build_ours(model_name, data, preprocessed)

            def expert_kernels():
                stacked = model.get_layer("experts").kernels[0].numpy()  # (inputs, experts, units)
                return [stacked[:, index, :] for index in range(stacked.shape[1])]

            similarity_init = mean_pairwise_cosine(expert_kernels()) if model_name == "mmoe" else None
            timer = EpochTimer.create(keras)
            if jit_compile:
                steps_per_epoch = -(-len(train) // FLAGS.batch_size)
                examples_per_epoch = steps_per_epoch * FLAGS.batch_size
                dataset = training_dataset(train, FLAGS.batch_size, seed, fixed_batch_shape=True)
                model.fit(dataset, epochs=FLAGS.epochs, steps_per_epoch=steps_per_epoch, verbose=0, callbacks=[timer])
            else:
                examples_per_epoch = len(train)
                dataset = training_dataset(train, FLAGS.batch_size, seed)
                model.fit(dataset, epochs=FLAGS.epochs, verbose=0, callbacks=[timer])
            predictions = model.predict(test.to_dataset(8192), verbose=0)
            result = {
                "library": library,
                "model": model_name,
                "seed": seed,
                "auc": {task: exact_auc(data.test.labels[task], predictions[task]) for task in tasks},
                "params": int(model.count_params()),
                "examples_per_second": examples_per_second(timer.seconds, examples_per_epoch),
                "examples_per_cpu_second": examples_per_second(timer.cpu_seconds, examples_per_epoch),
                "latency_ms": batch_one_latency_ms(model, single, FLAGS.latency_calls),
                "expert_similarity_init": similarity_init,
                "expert_similarity_trained": mean_pairwise_cosine(expert_kernels()) if model_name == "mmoe" else None,
                "load_average": os.getloadavg()[0],
            }
            logging.info("%s: %s", library, json.dumps(result))
            results.append(result)
    return results


def run_deepctr(python: pathlib.Path, mode: str, data_path: pathlib.Path, seed: int):
    """Run the DeepCTR worker in one Keras mode for one seed; return its result dicts."""
    output_path = data_path.with_name(f"deepctr_{mode}_seed{seed}.json")
    environment = dict(os.environ)
    environment.pop("TF_USE_LEGACY_KERAS", None)
    if mode == "tf_keras":
        environment["TF_USE_LEGACY_KERAS"] = "1"
    environment.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    command = [
        str(python), str(pathlib.Path(__file__).resolve()), f"--worker={mode}", f"--worker_seed={seed}",
        f"--worker_data={data_path}", f"--worker_output={output_path}",
    ]  # fmt: skip
    logging.info("DeepCTR (%s): seed %d, %s", mode, seed, FLAGS.models)
    with subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, text=True) as process:
        for line in process.stdout:
            logging.info("DeepCTR %s: %s", mode, line.strip())
    if process.returncode != 0:
        raise RuntimeError(f"The DeepCTR worker ({mode}, seed {seed}) failed with exit status {process.returncode}; see the log above.")
    return json.loads(output_path.read_text(encoding="utf-8"))


def summarize(results):
    """Return `{(library, model): summary}` with means and standard deviations over seeds."""
    import numpy as np

    groups = {}
    for result in results:
        groups.setdefault((result["library"], result["model"]), []).append(result)
    table = {}
    for key, runs in groups.items():
        summary = {"params": runs[0]["params"], "seeds": len(runs), "auc": {}}
        for task in runs[0]["auc"]:
            values = [run["auc"][task] for run in runs]
            summary["auc"][task] = (float(np.mean(values)), float(np.std(values)))
        for field in ("examples_per_second", "examples_per_cpu_second", "latency_ms", "expert_similarity_init", "expert_similarity_trained"):
            values = [run[field] for run in runs if run.get(field) is not None]
            summary[field] = (float(np.mean(values)), float(np.std(values))) if values else None
        loads = [run["load_average"] for run in runs if run.get("load_average") is not None]
        summary["load_average"] = (min(loads), max(loads)) if loads else None
        table[key] = summary
    return table


def verdicts(table, models) -> list:
    """Return Markdown lines that check the AUC and throughput targets per model."""
    lines = []
    for model_name in models:
        peers = [(key[0], value) for key, value in table.items() if key[1] == model_name and key[0].startswith("deepctr")]
        for library in ("mtl_layers", "mtl_layers_preprocessed"):
            ours = table.get((library, model_name))
            if ours is not None and peers:
                lines.append(verdict_line(library, model_name, ours, peers))
    return lines


def verdict_line(library, model_name, ours, peers) -> str:
    """Return one Markdown line that checks the targets for one of our variants."""
    fastest_library, fastest = max(peers, key=lambda item: item[1]["examples_per_second"][0])
    ratio = ours["examples_per_second"][0] / fastest["examples_per_second"][0]
    cpu_note = ""
    if ours.get("examples_per_cpu_second") and fastest.get("examples_per_cpu_second"):
        cpu_ratio = ours["examples_per_cpu_second"][0] / fastest["examples_per_cpu_second"][0]
        cpu_note = f", {cpu_ratio:.2f}× by CPU time"
    auc_checks = []
    for task, (mean, _) in ours["auc"].items():
        peer_mean, peer_std = fastest["auc"][task]
        within = mean >= peer_mean - peer_std
        auc_checks.append(f"{task} {mean:.4f} vs {peer_mean:.4f} ± {peer_std:.4f} ({'met' if within else 'missed'})")
    return (
        f"* {library} {MODEL_LABELS[model_name]} against {fastest_library} (DeepCTR's faster mode): "
        f"throughput {ratio:.2f}× ({'met' if ratio >= 2 else 'missed'}, target ≥ 2×){cpu_note}; AUC "
        + "; ".join(auc_checks) + "."
    )


def run_order_note(results) -> str:
    """Return a sentence stating whether the libraries took turns within each seed."""
    libraries = [result["library"] for result in results]
    switches = sum(first != second for first, second in zip(libraries, libraries[1:]))
    if switches <= len(set(libraries)) - 1:
        return (
            "NOTE: in this run each library trained all its seeds before the next library started, "
            "so a change in machine load during the run changes the throughput ratios."
        )
    return "Libraries took turns within each seed."


def markdown_report(table, data, models, command, seconds, results) -> str:
    """Return the Markdown section of docs/benchmarks.md."""
    from benchmarks.report import machine_description

    tasks = [task.name for task in data.tasks]
    lines = [
        "## DeepCTR 0.9.4 side by side",
        "",
        f"Command: `{command}` ({'' if seconds != seconds else f'{seconds / 60:.0f} min '}on "
        f"{machine_description()}; all rows from this one run).",
        "",
        f"{data.description} Task group {FLAGS.task_group}. {FLAGS.num_seeds} seeds, {FLAGS.epochs} epochs, "
        f"Adam {FLAGS.learning_rate:g}, batch {FLAGS.batch_size}; MMoE: {FLAGS.num_experts} experts of "
        f"{FLAGS.expert_units} units; Shared-Bottom: {FLAGS.bottom_units} units; towers of {FLAGS.tower_units}; "
        f"embeddings of {FLAGS.embedding_dim}. `mtl_layers`: raw strings and numbers, looked up, "
        "embedded and normalised inside the model (`FeatureSpec`). `mtl_layers_preprocessed`: the same "
        "vocabulary indices and standardised numbers that DeepCTR reads (`preprocess_features`), "
        "embedded as in the raw-feature model. "
        + (
            "Both of ours embed all categorical features from one table (`packed=True`: one lookup "
            "and one variable instead of one per feature; the preprocessed model then has two inputs, "
            "an id matrix and a number matrix). "
            if FLAGS.packed
            else "Both of ours embed each feature from its own table. "
        )
        + f"Our embeddings start N(0, {FLAGS.embedding_init_stddev:g}²) with an L2 penalty of {FLAGS.embedding_l2:g}, "
        "DeepCTR's defaults (`init_std`, `l2_reg_embedding`). "
        + (
            f"The preprocessed model is compiled with XLA, `steps_per_execution={FLAGS.jit_steps_per_execution}`, "
            "and reads full batches of repeated shuffled data, so the step is compiled once; the raw-feature "
            f"model cannot be compiled with XLA (string lookups) and runs `steps_per_execution={FLAGS.steps_per_execution}`. "
            if FLAGS.jit_compile
            else f"Both: `steps_per_execution={FLAGS.steps_per_execution}`, no XLA. "
        )
        + "Both gather batches from in-memory tensors and compile losses only (no metrics during training), "
        "the same as the DeepCTR runs. "
        "DeepCTR: `model.fit` on NumPy arrays of indices, as its documentation shows. "
        "Throughput over epochs 2 and later, in wall time and in process CPU time (all threads; other "
        "processes on a shared machine change it less); latency is the median `predict_on_batch` time for one example. "
        "Expert similarity: mean pairwise cosine of the experts' first-layer kernels (1.0 means identical).",
        "",
        "| library | model | params | " + " | ".join(f"AUC {task}" for task in tasks)
        + " | train examples/s | train examples/CPU-s | batch-1 latency (ms) | expert similarity init → trained |",
        "|---|---|---|" + "---|" * len(tasks) + "---|---|---|---|",
    ]
    for (library, model_name), summary in sorted(table.items(), key=lambda item: (item[0][1], item[0][0])):
        cells = [f"{summary['auc'][task][0]:.4f} ± {summary['auc'][task][1]:.4f}" for task in tasks]
        speed = summary["examples_per_second"]
        cpu = summary.get("examples_per_cpu_second")
        cpu_speed = "–" if cpu is None else f"{cpu[0]:,.0f} ± {cpu[1]:,.0f}"
        latency = summary["latency_ms"]
        if summary["expert_similarity_init"] is None:
            similarity = "–"
        else:
            similarity = f"{summary['expert_similarity_init'][0]:.3f} → {summary['expert_similarity_trained'][0]:.3f}"
        lines.append(
            f"| {library} | {MODEL_LABELS[model_name]} | {summary['params']:,} | " + " | ".join(cells)
            + f" | {speed[0]:,.0f} ± {speed[1]:,.0f} | {cpu_speed} | {latency[0]:.2f} | {similarity} |"
        )
    lines += ["", run_order_note(results)]
    loads = [value for summary in table.values() if summary["load_average"] for value in summary["load_average"]]
    if not loads:
        lines += ["", "The machine's load average was not recorded in this run."]
    else:
        lines += [
            "",
            f"1-minute load average after each run: {min(loads):.1f} to {max(loads):.1f} on {os.cpu_count()} "
            "cores. Throughput from a run with a load above the core count measures the share of the CPU "
            "each library received as much as its speed.",
        ]
    lines += ["", "Targets (AUC within one standard deviation of DeepCTR's or better; throughput ≥ 2×):", ""]
    lines += verdicts(table, models)
    return "\n".join(lines)


def apply_quick_mode():
    """Shrink the run so that it finishes in about a minute."""
    FLAGS.num_seeds = 2
    FLAGS.epochs = 2
    FLAGS.max_train_examples = 2000
    FLAGS.latency_calls = 20
    FLAGS.deepctr_modes = ["tf_keras"]
    FLAGS.models = ["mmoe"]


def main(argv):
    del argv
    if FLAGS.worker:
        run_deepctr_worker()
        return
    if FLAGS.quick:
        apply_quick_mode()
    unknown = [name for name in FLAGS.models if name not in MODEL_LABELS]
    if unknown:
        raise ValueError(f"Unknown --models {unknown}. Use mmoe or shared_bottom.")
    bad_modes = [mode for mode in FLAGS.deepctr_modes if mode not in ("keras3", "tf_keras")]
    if bad_modes:
        raise ValueError(f"Unknown --deepctr_modes {bad_modes}. Use keras3 or tf_keras.")
    if os.environ.get("TF_USE_LEGACY_KERAS"):
        raise ValueError(
            "Run the comparison in Keras 3 mode: unset TF_USE_LEGACY_KERAS. The script sets it "
            "for the DeepCTR tf_keras worker itself."
        )

    output_dir = pathlib.Path(FLAGS.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    data = load_data()
    logging.info("%s: %d train, %d test examples.", data.name, len(data.train), len(data.test))
    if FLAGS.from_results:
        results = json.loads(pathlib.Path(FLAGS.from_results).read_text(encoding="utf-8"))
        report(results, data, float("nan"))
        return
    python = ensure_deepctr_venv(pathlib.Path(FLAGS.venv_dir))

    data_paths = {}
    for mode in FLAGS.deepctr_modes:
        data_paths[mode] = output_dir / f"deepctr_{mode}.npz"
        encode_for_deepctr(data, mode, data_paths[mode])

    # Libraries take turns within each seed, so that a change in the machine's load during
    # the run affects every library alike instead of whichever runs last.
    results = []
    for seed in range(FLAGS.num_seeds):
        results += run_ours(data, preprocessed=False, seeds=[seed])
        results += run_ours(data, preprocessed=True, seeds=[seed])
        for mode in FLAGS.deepctr_modes:
            results += run_deepctr(python, mode, data_paths[mode], seed)
    seconds = time.perf_counter() - started
    (output_dir / "results.json").write_text(json.dumps(results), encoding="utf-8")
    report(results, data, seconds)


def report(results, data, seconds):
    """Print the Markdown report and, with --write_docs, write it to docs/benchmarks.md."""
    table = summarize(results)
    flags_given = [
        flag.serialize()
        for flag in FLAGS.get_flags_for_module(sys.modules[__name__])
        if flag.present and flag.name not in ("from_results", "output_dir")
    ]
    command = " ".join(["python benchmarks/deepctr_comparison.py"] + flags_given)
    markdown = markdown_report(table, data, FLAGS.models, command, seconds, results)
    print("\n" + markdown)
    if FLAGS.write_docs:
        from benchmarks.report import BENCHMARKS_PAGE, write_section

        write_section(BENCHMARKS_PAGE, "deepctr_comparison", markdown)
        logging.info("Section deepctr_comparison written to %s", BENCHMARKS_PAGE)


if __name__ == "__main__":
    app.run(main)
