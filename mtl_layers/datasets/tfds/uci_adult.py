"""TFDS builder `uci_adult`: UCI Adult with the MMoE paper's task groups as configs.

    tfds.load("uci_adult/group1", split="train", as_supervised=True)

gives `(inputs, labels)` dicts. Splits: `train` (adult.data, 32,561 rows) and `test`
(adult.test, 16,281 rows). Take a validation set with TFDS's split slicing, for example
`split=["train[:90%]", "train[90%:]", "test"]`.
"""

import pathlib

import tensorflow_datasets as tfds

from mtl_layers.datasets import census, files
from mtl_layers.datasets.tfds import _census, _sources

DESCRIPTION = """\
UCI Adult (Becker and Kohavi, 1996; CC BY 4.0): 48,842 people from the 1994 US census
extract, 14 attributes and the income class. As in the MMoE paper's census experiments,
config `group1` predicts income above 50K and never married, and `group2` predicts college
education and never married. The columns that give a label away are not inputs. The
`fnlwgt` sampling weight is kept as an input, as in `mtl_layers.datasets.census`.
"""

CITATION = (
    """\
@misc{becker1996adult,
  title={Adult},
  author={Becker, Barry and Kohavi, Ronny},
  year={1996},
  howpublished={UCI Machine Learning Repository},
  doi={10.24432/C5XW20}
}

"""
    + _sources.MMOE_CITATION
)

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Optional: the package ships adult.data and adult.test, and they are downloaded from
https://archive.ics.uci.edu/ml/machine-learning-databases/adult/ when missing. To use
another copy, put adult.data and adult.test (plain or .gz) in the manual folder or in
its `uci-adult/` subfolder.
"""


class UciAdult(tfds.core.GeneratorBasedBuilder):
    """UCI Adult with the task labels of the MMoE paper's census experiments."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = _census.task_group_configs()
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=DESCRIPTION,
            features=_census.features("adult", self.builder_config.task_group),
            supervised_keys=("inputs", "labels"),
            homepage="https://archive.ics.uci.edu/dataset/2/adult",
            citation=CITATION,
            license="CC BY 4.0",
        )

    def _source_file(self, dl_manager, name: str) -> pathlib.Path:
        folders = _sources.search_folders(dl_manager, "uci-adult") + [census.PACKAGED_ADULT_DIR]
        path = files.find_file(folders, [name, name + ".gz"])
        if path is None:
            path = _sources.download_missing(
                dl_manager, dl_manager.download, census.ADULT_URL + name, f"{name} (or {name}.gz)", folders
            )
        files.verify_sha256(path, census.ADULT_SHA256[name])
        return path

    def _split_generators(self, dl_manager):
        return {
            "train": self._generate_examples(self._source_file(dl_manager, "adult.data"), False),
            "test": self._generate_examples(self._source_file(dl_manager, "adult.test"), True),
        }

    def _generate_examples(self, path: pathlib.Path, skip_first_line: bool):
        # adult.test starts with the note `|1x3 Cross validator`, which is not a row.
        return _census.generate_examples(
            path, "adult", self.builder_config.task_group, census.ADULT_COLUMNS,
            census.ADULT_NUMERIC, skip_first_line,
        )  # fmt: skip
