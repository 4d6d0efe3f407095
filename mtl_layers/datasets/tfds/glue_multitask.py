"""TFDS builder `glue_multitask`: five GLUE tasks mixed into one multi-task data set.

    tfds.load("glue_multitask", split="train", as_supervised=True)

gives `(inputs, labels)`: `inputs` contains `task_id` (the index in
`mtl_layers.datasets.glue.TASK_NAMES`: CoLA 0, MRPC 1, RTE 2, STS-B 3, SST-2 4),
`sentence` and `second_sentence` (empty for the single-sentence tasks CoLA and SST-2);
`labels` contains `label`, 0.0 or 1.0 for the classification tasks (1 = acceptable,
paraphrase, entailment, positive) and the similarity score in [0, 5] for STS-B.

Splits: `train` (87,807 examples: CoLA 8,551, MRPC 3,668, RTE 2,490, STS-B 5,749,
SST-2 67,349) and `validation` (GLUE's dev sets, 4,100 examples). TFDS writes the examples
in an order shuffled by key, so the tasks are mixed in proportion to their sizes; for
another mixing rate, filter by `task_id` and combine the per-task data sets with
`tf.data.Dataset.sample_from_datasets`.
"""

import pathlib

import numpy as np
import tensorflow_datasets as tfds

from mtl_layers.datasets import files, glue
from mtl_layers.datasets.tfds import _sources

DESCRIPTION = """\
Five tasks of GLUE, the General Language Understanding Evaluation benchmark: CoLA
(acceptability), MRPC (paraphrase), RTE (entailment), STS-B (similarity, regression) and
SST-2 (sentiment), mixed into one data set with a task-id feature, as in multi-task
models such as HyperGrid Transformers. Each task keeps the terms of its source corpus
(MRPC: Microsoft Research Shared Source licence, non-commercial); cite GLUE and each
source corpus.
"""

CITATION = """\
@inproceedings{wang2019glue,
  title={{GLUE}: A Multi-Task Benchmark and Analysis Platform for Natural Language Understanding},
  author={Wang, Alex and Singh, Amanpreet and Michael, Julian and Hill, Felix and Levy, Omer and Bowman, Samuel R.},
  booktitle={International Conference on Learning Representations},
  year={2019}
}

@inproceedings{tay2021hypergrid,
  title={HyperGrid Transformers: Towards A Single Model for Multiple Tasks},
  author={Tay, Yi and Zhao, Zhe and Bahri, Dara and Metzler, Donald and Juan, Da-Cheng},
  booktitle={International Conference on Learning Representations},
  year={2021}
}"""

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Put the GLUE files in the layout of GLUE's download_glue_data.py,
`<TASK>/train.tsv` and `<TASK>/dev.tsv` for CoLA, MRPC, RTE, STS-B and SST-2, in the
manual folder or in its `glue/` subfolder. CoLA, RTE, STS-B and SST-2 are downloaded from
the official GLUE archives when missing. MRPC has no official archive (GLUE builds it
from Microsoft's installer), so its two files must be placed by hand.
"""

# GLUE's dev sets are TFDS's `validation` split.
SPLIT_FILES = {"train": "train", "validation": "dev"}


class GlueMultitask(tfds.core.GeneratorBasedBuilder):
    """CoLA, MRPC, RTE, STS-B and SST-2 as one data set with a task id per example."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=DESCRIPTION,
            features=tfds.features.FeaturesDict(
                {
                    "inputs": tfds.features.FeaturesDict(
                        {
                            "task_id": tfds.features.ClassLabel(
                                names=list(glue.TASK_NAMES), doc="The GLUE task of the example."
                            ),
                            "sentence": tfds.features.Text(doc="The sentence, or the first of a pair."),
                            "second_sentence": tfds.features.Text(
                                doc="The second sentence of a pair; empty for CoLA and SST-2."
                            ),
                        }
                    ),
                    "labels": tfds.features.FeaturesDict(
                        {
                            "label": tfds.features.Scalar(
                                np.float32,
                                doc="0.0 or 1.0 for the classification tasks, the score in [0, 5] for STS-B.",
                            ),
                        }
                    ),
                }
            ),
            supervised_keys=("inputs", "labels"),
            homepage="https://gluebenchmark.com/",
            citation=CITATION,
        )

    def _task_folder(self, dl_manager, task: str) -> pathlib.Path:
        """Return a folder with `<task>/train.tsv` and `<task>/dev.tsv`."""
        folders = _sources.search_folders(dl_manager, "glue")
        for folder in folders:
            if all((folder / task / f"{split}.tsv").is_file() for split in glue.SPLITS):
                return folder
        if task not in glue.ARCHIVE_URLS:
            raise _sources.missing_file_error(
                dl_manager, f"{task}/train.tsv and {task}/dev.tsv", folders, MANUAL_DOWNLOAD_INSTRUCTIONS
            )
        # NOTE: this download path has not been run against the GLUE server; the archive
        # checksums are those that TFDS 4.9.10 registers for the same addresses.
        names = [f"{split}.tsv" for split in glue.SPLITS]
        return _sources.download_missing(
            dl_manager,
            dl_manager.download_and_extract,
            glue.ARCHIVE_URLS[task],
            _sources.missing_in_folders([folder / task for folder in folders], names),
            folders,
        )

    def _split_generators(self, dl_manager):
        folders = {task: self._task_folder(dl_manager, task) for task in glue.TASK_NAMES}
        return {split: self._generate_examples(folders, split_file) for split, split_file in SPLIT_FILES.items()}

    def _generate_examples(self, folders, split_file: str):
        for task in glue.TASK_NAMES:
            # load_split checks the file's SHA-256 and parses it as the GLUE loaders do.
            part = glue.load_split(task, split_file, data_dir=folders[task])
            second = part.second_sentences or [""] * len(part)
            for index in range(len(part)):
                example = {
                    "inputs": {
                        "task_id": task,
                        "sentence": part.sentences[index],
                        "second_sentence": second[index],
                    },
                    "labels": {"label": np.float32(part.labels[index])},
                }
                yield f"{task}:{index}", example
