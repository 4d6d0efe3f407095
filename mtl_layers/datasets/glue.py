"""Five GLUE tasks (CoLA, MRPC, RTE, STS-B, SST-2): loading, tokenization and metrics.

GLUE (Wang et al., "GLUE: A Multi-Task Benchmark and Analysis Platform for Natural
Language Understanding", ICLR 2019) is read from the `.tsv` files that GLUE's
`download_glue_data.py` writes, in the `<data_dir>/<TASK>/{train,dev}.tsv` layout. The
task licences forbid redistribution, so nothing is bundled: the loaders read a folder
(the argument, else `$MTL_LAYERS_DATA_DIR`, each searched directly and in its `glue/`
subfolder) or, with `download=True`, fetch the official GLUE archives of CoLA, RTE,
STS-B and SST-2. Every file is checked against a pinned SHA-256 digest. MRPC has no
official archive (GLUE builds it from Microsoft's installer) and must be placed by hand.

The files are read with CSV quoting disabled: many fields start with `"`, and with
quoting MRPC and STS-B rows merge silently. MRPC files start with a UTF-8 byte order
mark and CoLA has no header row.
"""

import csv
import dataclasses
import numbers
import pathlib
import shutil
import tempfile
from typing import Dict, List, Optional, Sequence

import numpy as np
from absl import logging

from mtl_layers.datasets import files

TASK_NAMES = ("CoLA", "MRPC", "RTE", "STS-B", "SST-2")
SPLITS = ("train", "dev")

# SHA-256 of the train and dev files in the layout of GLUE's download script (GLUE's
# test splits have no public labels and are not read).
SHA256 = {
    ("CoLA", "train"): "cb368ebeb9f27d7ad03720d27ddc95687a311bdb100781a2fe59a5f5b1bc0624",
    ("CoLA", "dev"): "8c013e21dc39957cac37378d87bebe225b694a0d5fe13eded66c2856628833fd",
    ("MRPC", "train"): "122becc469405bc16f9defcb8715d2a4b7ce600e9d9381e6dc42bfdd1494c51d",
    ("MRPC", "dev"): "81c8a1a9e1dfe461dd2c1a4f98f43fe18bece44d2bf9e3d0b245b88e5aa5eaf7",
    ("RTE", "train"): "41e3a9b063433392343fad9e962cf2f58b681c78d8f71592f4186f0837246c5c",
    ("RTE", "dev"): "80230dfa1347282e7b532b06a1004a76a710087541189bf874223ddf0e3819fb",
    ("STS-B", "train"): "41c4d978b6162abdcada7e49a982211954cca5459c228db478af333124b257a2",
    ("STS-B", "dev"): "fe7dc0632a5033562f3cadff991f6e8d9b9b6311861660e78c3c82eb7db67f59",
    ("SST-2", "train"): "48eac26399f8456935f81dd9e3a745c1430adb6c62e233ccfe22db4a0d15d1d1",
    ("SST-2", "dev"): "54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0",
}

# Official GLUE archives (the URLs of GLUE's download_glue_data.py).
ARCHIVE_URLS = {
    "CoLA": "https://dl.fbaipublicfiles.com/glue/data/CoLA.zip",
    "RTE": "https://dl.fbaipublicfiles.com/glue/data/RTE.zip",
    "STS-B": "https://dl.fbaipublicfiles.com/glue/data/STS-B.zip",
    "SST-2": "https://dl.fbaipublicfiles.com/glue/data/SST-2.zip",
}

# Standard GLUE dev metric(s) per task; the task score is their mean.
METRICS = {
    "CoLA": ("matthews",),
    "MRPC": ("f1", "accuracy"),
    "RTE": ("accuracy",),
    "STS-B": ("pearson", "spearman"),
    "SST-2": ("accuracy",),
}

# Output kind of each task, as `mtl_layers.tasks.TaskSpec.kind`.
KINDS = {"CoLA": "binary", "MRPC": "binary", "RTE": "binary", "STS-B": "regression", "SST-2": "binary"}


@dataclasses.dataclass
class GlueSplit:
    """One split of one task: sentences (second sentences for pair tasks) and labels.

    Labels are 0/1 floats for the classification tasks (1 = acceptable, paraphrase,
    entailment, positive) and the similarity score in [0, 5] for STS-B.
    """

    task: str
    split: str
    sentences: List[str]
    second_sentences: Optional[List[str]]
    labels: np.ndarray

    def __len__(self):
        return len(self.sentences)


def _check_task(task: str) -> str:
    if task not in TASK_NAMES:
        raise ValueError(f"`task` must be one of {TASK_NAMES}. Received: task={task!r}")
    return task


def default_glue_dir() -> Optional[pathlib.Path]:
    """Return `$MTL_LAYERS_DATA_DIR/glue`, or None when the variable is unset."""
    data_dir = files.default_data_dir()
    return data_dir / "glue" if data_dir else None


def task_file(
    task: str, split: str, data_dir=None, download: bool = False
) -> pathlib.Path:
    """Return the verified path of `<TASK>/<split>.tsv`, downloading it if allowed.

    When `data_dir` is given, only `data_dir/<TASK>` and `data_dir/glue/<TASK>` are
    searched. Without it, the loader looks in the same two under
    `$MTL_LAYERS_DATA_DIR`, then in the download cache (`$MTL_LAYERS_CACHE_DIR/glue`).
    With `download=True` a file of CoLA, RTE, STS-B or SST-2 that is not found is taken
    from the cache, or fetched from the official GLUE archive into the cache.

    Raises:
        ValueError: `task` or `split` is invalid.
        FileNotFoundError: `data_dir` or `$MTL_LAYERS_DATA_DIR` is not a folder, or the
            file is not found and cannot be downloaded.
        mtl_layers.datasets.files.DownloadError: The download failed.
        mtl_layers.datasets.files.ChecksumError: The file differs from the official one.
    """
    _check_task(task)
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}. Received: split={split!r}")
    hint = (
        "Pass download=True to fetch it from the official GLUE archive into the cache."
        if task in ARCHIVE_URLS
        else "GLUE builds MRPC from Microsoft's MSR Paraphrase Corpus installer, so "
        "run GLUE's download_glue_data.py and copy its MRPC folder there."
    )
    name = f"{split}.tsv"
    cache = files.cache_dir() / "glue"
    if data_dir is not None:
        root = files.check_data_dir(data_dir, f"{task}/{name} or glue/{task}/{name}", hint)
        folders = [root, root / "glue"]
    else:
        default = files.default_data_dir()
        folders = [] if default is None else [default, default / "glue"]
        folders.append(cache)

    task_folders = [folder / task for folder in folders]
    path = files.find_file(task_folders, [name])
    if path is None and download and task in ARCHIVE_URLS:
        if data_dir is not None:
            logging.warning(
                "%s/%s not found in %s; using download=True to take it from the cache %s.",
                task, name, [str(folder) for folder in task_folders], cache,
            )  # fmt: skip
        path = cache / task / name
        if not path.is_file():
            _download_task(task, cache)
    if path is None:
        searched = ", ".join(str(folder) for folder in task_folders)
        if data_dir is not None:
            fix = f"Put {task}/{name} in `data_dir` or in its glue/ subfolder."
        else:
            fix = (
                f"Pass the folder that contains {task}/{name} (directly or in a glue/ "
                f"subfolder) as `data_dir`, or set {files.DATA_DIR_VARIABLE} to it."
            )
        raise FileNotFoundError(
            f"GLUE file {task}/{name} not found (searched {searched})."
            f"{files.not_regular_files(task_folders, [name])} {fix} {hint}"
        )
    files.verify_sha256(path, SHA256[(task, split)])
    return path


def _download_task(task: str, cache: pathlib.Path) -> None:
    """Fetch the task's GLUE archive and add its missing `.tsv` files to `cache/<task>`.

    Files already in `cache/<task>` are kept, so a folder that holds only some of them
    (after an interrupted copy, for example) is completed and nothing that the user put
    there is replaced. The extracted files are verified before any of them is placed.

    Raises:
        FileExistsError: `cache/<task>`, or the path of a missing file in it, is taken
            by something other than a folder or a regular file.
        mtl_layers.datasets.files.DownloadError: The download failed, or the archive is
            corrupt or lacks a file.
        mtl_layers.datasets.files.ChecksumError: An extracted file differs from the
            official one.
    """
    # NOTE: this path has not been run against the live archives. The pinned digests are
    # those of the tested local copies, so an archive whose files differ in any byte
    # raises ChecksumError and adds nothing to the cache.
    url = ARCHIVE_URLS[task]
    target = cache / task
    if (target.exists() or target.is_symlink()) and not target.is_dir():
        raise FileExistsError(
            f"The GLUE cache path {target} {files.describe_missing_folder(target)}, so the "
            f"{task} files cannot be downloaded into it. Delete it and run again."
        )
    missing = [split for split in SPLITS if not (target / f"{split}.tsv").is_file()]
    blocked = [
        str(target / f"{split}.tsv")
        for split in missing
        if (target / f"{split}.tsv").exists() or (target / f"{split}.tsv").is_symlink()
    ]
    if blocked:
        raise FileExistsError(
            f"These paths in the GLUE cache are not regular files, so the downloaded "
            f"{task} files cannot be placed there: {blocked}. Delete them, or replace them "
            "with the official files, and run again."
        )
    names = " and ".join(f"{split}.tsv" for split in missing)
    manual_step = f"download the archive by hand and copy {names} from its {task}/ folder into {target}"

    cache.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{task}.", dir=cache))
    try:
        archive_path = staging / f"{task}.zip"
        logging.info("Downloading %s to %s", url, archive_path)
        with open(archive_path, "wb") as output:
            files.fetch_url(url, output, target, manual_step)
        with files.open_zip(archive_path, url, manual_step) as archive:
            for split in missing:
                with open(staging / f"{split}.tsv", "wb") as output:
                    files.read_zip_member(archive, f"{task}/{split}.tsv", output, url, manual_step)
        for split in missing:
            files.check_download_sha256(
                staging / f"{split}.tsv", SHA256[(task, split)], url, target / f"{split}.tsv"
            )
        target.mkdir(exist_ok=True)
        for split in missing:
            (staging / f"{split}.tsv").replace(target / f"{split}.tsv")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _read_rows(path: pathlib.Path) -> List[List[str]]:
    # utf-8-sig drops MRPC's byte order mark and reads the other files unchanged.
    with open(path, encoding="utf-8-sig", newline="") as stream:
        return list(csv.reader(stream, delimiter="\t", quoting=csv.QUOTE_NONE))


def load_split(task: str, split: str, data_dir=None, download: bool = False) -> GlueSplit:
    """Read one split of one task into a `GlueSplit`."""
    path = task_file(task, split, data_dir=data_dir, download=download)
    rows = _read_rows(path)
    if task == "CoLA":
        # No header: source, label, original mark, sentence.
        return GlueSplit(
            task, split, [row[3] for row in rows], None, np.array([float(row[1]) for row in rows])
        )
    header, rows = rows[0], rows[1:]
    column = {name: index for index, name in enumerate(header)}
    if task == "MRPC":
        sentences = [row[column["#1 String"]] for row in rows]
        second = [row[column["#2 String"]] for row in rows]
        labels = [float(row[column["Quality"]]) for row in rows]
    elif task == "RTE":
        sentences = [row[column["sentence1"]] for row in rows]
        second = [row[column["sentence2"]] for row in rows]
        labels = [1.0 if row[column["label"]] == "entailment" else 0.0 for row in rows]
    elif task == "STS-B":
        sentences = [row[column["sentence1"]] for row in rows]
        second = [row[column["sentence2"]] for row in rows]
        labels = [float(row[column["score"]]) for row in rows]
    else:  # SST-2
        sentences = [row[column["sentence"]].strip() for row in rows]
        second = None
        labels = [float(row[column["label"]]) for row in rows]
    return GlueSplit(task, split, sentences, second, np.array(labels))


def load_glue(
    tasks: Sequence[str] = TASK_NAMES, data_dir=None, download: bool = False
) -> Dict[str, Dict[str, GlueSplit]]:
    """Return `{task: {"train": GlueSplit, "dev": GlueSplit}}` for the given tasks.

    `tasks` is a sequence of task names, or one name as a string.
    """
    if isinstance(tasks, str):
        tasks = [tasks]
    tasks = list(tasks)
    if not tasks:
        raise ValueError(f"`tasks` must name at least one of {TASK_NAMES}. Received: tasks=[]")
    for task in tasks:
        _check_task(task)
    return {
        task: {split: load_split(task, split, data_dir, download) for split in SPLITS}
        for task in tasks
    }


class PairTokenizer:
    """Map sentences and sentence pairs to fixed-length token ids.

    A Keras `TextVectorization` vocabulary is fit on training text (lower-cased,
    punctuation stripped, split on whitespace). Id 0 is padding, 1 the out-of-vocabulary
    token, and the last id (`vocab_size - 1`) separates the two sentences of a pair:
    `[first ids] [SEP] [second ids]`, padded with 0 to `sequence_length`. When a pair is
    too long, the longer sentence is cut first.
    """

    def __init__(self, max_tokens: int = 20000):
        from mtl_layers.compat import keras

        self.vectorizer = keras.layers.TextVectorization(
            max_tokens=max_tokens - 1, output_mode="int", ragged=True
        )

    def fit(self, texts: Sequence[str]) -> "PairTokenizer":
        """Build the vocabulary from `texts`."""
        self.vectorizer.adapt(np.array(list(texts), dtype=object))
        return self

    @property
    def vocab_size(self) -> int:
        """Number of ids, including padding, out-of-vocabulary and the separator."""
        return self.vectorizer.vocabulary_size() + 1

    @property
    def separator_id(self) -> int:
        """Id of the token between the two sentences of a pair."""
        return self.vocab_size - 1

    def _ids(self, sentences: Sequence[str]) -> List[List[int]]:
        return self.vectorizer(np.array(list(sentences), dtype=object)).to_list()

    def encode(
        self,
        sentences: Sequence[str],
        second_sentences: Optional[Sequence[str]],
        sequence_length: int,
    ) -> np.ndarray:
        """Return int32 ids of shape `(len(sentences), sequence_length)`.

        `sequence_length` must be at least 1 for single sentences, and at least 2 for
        pairs, which need room for the separator and one token. A pair that does not
        fit loses tokens from the end of its longer sentence first, so one sentence of
        a pair may lose all of its tokens.
        """
        minimum = 1 if second_sentences is None else 2
        if (
            isinstance(sequence_length, bool)
            or not isinstance(sequence_length, numbers.Integral)
            or sequence_length < minimum
        ):
            kind = "single sentences" if second_sentences is None else "pairs (separator and 1 token)"
            raise ValueError(
                f"`sequence_length` must be an integer >= {minimum} for {kind}. "
                f"Received: sequence_length={sequence_length!r}"
            )
        sentences = _check_sentences("sentences", sentences)
        if second_sentences is not None:
            second_sentences = _check_sentences("second_sentences", second_sentences)
            if len(second_sentences) != len(sentences):
                raise ValueError(
                    "`second_sentences` must have one entry per sentence. Received: "
                    f"{len(sentences)} sentences and {len(second_sentences)} second sentences."
                )
        first = self._ids(sentences)
        second = self._ids(second_sentences) if second_sentences is not None else None
        encoded = np.zeros((len(first), sequence_length), dtype="int32")
        for row, ids in enumerate(first):
            if second is None:
                ids = ids[:sequence_length]
            else:
                ids = self._join_pair(ids, second[row], sequence_length - 1)
            encoded[row, : len(ids)] = ids
        return encoded

    def _join_pair(self, ids: List[int], other: List[int], budget: int) -> List[int]:
        """Join a pair as `[ids] [SEP] [other]`, cutting the longer side to `budget` tokens."""
        # `encode` ensures budget >= 1, and each step removes one token, so the loop ends
        # after at most len(ids) + len(other) steps.
        while len(ids) + len(other) > budget:
            if len(ids) >= len(other):
                ids = ids[:-1]
            else:
                other = other[:-1]
        return ids + [self.separator_id] + other


def _check_sentences(name: str, sentences) -> List[str]:
    if isinstance(sentences, (str, bytes)):
        raise ValueError(
            f"`{name}` must be a sequence of strings, not one string. Wrap a single "
            f"sentence in a list. Received: {name}={sentences!r}"
        )
    return list(sentences)


def _ranks(values: np.ndarray) -> np.ndarray:
    """Return 1-based ranks with ties given their average rank."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    ranks = np.empty(len(values), dtype="float64")
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2.0 + 1.0
        start = end + 1
    return ranks


def _pearson(a, b) -> float:
    a, b = a - a.mean(), b - b.mean()
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denominator) if denominator > 0 else 0.0


def compute_metrics(task: str, labels, predictions) -> Dict[str, float]:
    """Return the task's standard GLUE dev metrics and their mean as `"score"`.

    `predictions` are probabilities of class 1 (thresholded at 0.5) for the
    classification tasks and scores for STS-B. Matthews correlation, F1 and the
    correlations are 0 when undefined (a constant prediction).

    Raises:
        ValueError: `task` is unknown, the inputs are empty or differ in length, or
            they contain NaN or infinite values.
    """
    _check_task(task)
    labels = np.asarray(labels, dtype="float64").reshape(-1)
    predictions = np.asarray(predictions, dtype="float64").reshape(-1)
    if labels.shape != predictions.shape:
        raise ValueError(
            "`labels` and `predictions` must have the same length. Received: "
            f"{labels.shape[0]} labels, {predictions.shape[0]} predictions for task {task!r}."
        )
    if labels.size == 0:
        raise ValueError(
            f"`labels` and `predictions` must contain at least one example. Received: "
            f"0 examples for task {task!r}."
        )
    fixes = {
        "labels": "Remove those examples or correct their labels.",
        "predictions": "Non-finite outputs usually mean that the model diverged, so lower "
        "the learning rate or check the inputs, then predict again.",
    }
    for name, values in (("labels", labels), ("predictions", predictions)):
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise ValueError(
                f"`{name}` must be finite for task {task!r}. Received: {bad.size} NaN or "
                f"infinite values among {values.size}, the first at index {bad[0]} "
                f"({values[bad[0]]}). {fixes[name]}"
            )
    results = {}
    if KINDS[task] == "binary":
        predicted = predictions >= 0.5
        actual = labels >= 0.5
        true_positive = float(np.sum(predicted & actual))
        true_negative = float(np.sum(~predicted & ~actual))
        false_positive = float(np.sum(predicted & ~actual))
        false_negative = float(np.sum(~predicted & actual))
        results["accuracy"] = (true_positive + true_negative) / len(labels)
        f1_denominator = 2 * true_positive + false_positive + false_negative
        results["f1"] = 2 * true_positive / f1_denominator if f1_denominator else 0.0
        mcc_denominator = np.sqrt(
            (true_positive + false_positive)
            * (true_positive + false_negative)
            * (true_negative + false_positive)
            * (true_negative + false_negative)
        )
        results["matthews"] = (
            float((true_positive * true_negative - false_positive * false_negative) / mcc_denominator)
            if mcc_denominator
            else 0.0
        )
    else:
        results["pearson"] = _pearson(labels, predictions)
        results["spearman"] = _pearson(_ranks(labels), _ranks(predictions))
    metrics = {name: results[name] for name in METRICS[task]}
    metrics["score"] = float(np.mean(list(metrics.values())))
    return metrics
