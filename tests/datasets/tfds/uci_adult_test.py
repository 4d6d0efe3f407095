"""Tests of the `uci_adult` TFDS builder on fake files and on the real UCI files."""

import os
import pathlib
from unittest import mock

import numpy as np
import pytest
import tensorflow_datasets as tfds

from mtl_layers.datasets import census, files
from mtl_layers.datasets.tfds import uci_adult

FAKE_DIR = pathlib.Path(__file__).resolve().parent.parent / "tfds_fake_data" / "uci_adult"
FAKE_SHA256 = {name: files.content_sha256(FAKE_DIR / name) for name in census.ADULT_SHA256}


# Preparing the real files takes most of the time of these tests. The builders run no
# Keras code, so only the Keras 3 run of tests/run.sh prepares them.
keras3_run_only = pytest.mark.skipif(
    os.environ.get("TF_USE_LEGACY_KERAS") == "1",
    reason="real files are prepared in the Keras 3 run only; the builders run no Keras code",
)


class UciAdultTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = uci_adult.UciAdult
    EXAMPLE_DIR = FAKE_DIR
    SPLITS = {"train": 3, "test": 2}
    BUILDER_CONFIG_NAMES_TO_TEST = ["group1", "group2"]

    def setUp(self):
        super().setUp()
        patcher = mock.patch.dict(census.ADULT_SHA256, FAKE_SHA256)
        patcher.start()
        self.addCleanup(patcher.stop)


def _prepare(config, data_dir, manual_dir):
    builder = uci_adult.UciAdult(config=config, data_dir=str(data_dir))
    download_config = tfds.download.DownloadConfig(manual_dir=str(manual_dir))
    builder.download_and_prepare(download_config=download_config)
    return builder


def _all_examples(builder, split):
    return list(tfds.as_numpy(builder.as_dataset(split=split, as_supervised=True)))


def test_fake_group1_labels_and_inputs(tmp_path):
    with mock.patch.dict(census.ADULT_SHA256, FAKE_SHA256):
        builder = _prepare("group1", tmp_path, FAKE_DIR)
    test = _all_examples(builder, "test")
    by_age = {float(inputs["age"]): labels for inputs, labels in test}
    # The ">50K." label of adult.test counts as income above 50K.
    assert by_age[41.0]["income"] == 1.0
    assert by_age[19.0]["never_married"] == 1.0
    inputs, _ = test[0]
    assert "marital_status" not in inputs
    assert "income" not in inputs
    assert inputs["fnlwgt"].dtype == np.float32
    assert isinstance(inputs["workclass"], bytes)


def test_fake_group2_drops_education(tmp_path):
    with mock.patch.dict(census.ADULT_SHA256, FAKE_SHA256):
        builder = _prepare("group2", tmp_path, FAKE_DIR)
    train = _all_examples(builder, "train")
    inputs, labels = train[0]
    assert "education" not in inputs
    assert "education_num" not in inputs
    assert sorted(labels) == ["college_education", "never_married"]
    college = {float(inputs["age"]): labels["college_education"] for inputs, labels in train}
    assert college == {30.0: 1.0, 52.0: 1.0, 23.0: 0.0}


def test_changed_file_fails_checksum(tmp_path):
    # The fake files differ from the official ones, so the pinned digests reject them.
    with pytest.raises(files.ChecksumError, match="adult.data"):
        _prepare("group1", tmp_path, FAKE_DIR)


@keras3_run_only
def test_real_files_row_counts(tmp_path, data_file):
    manual_dir = data_file("uci-adult/adult.data").parent.parent
    with mock.patch.object(tfds.download.DownloadManager, "download", side_effect=AssertionError("network")):
        builder = _prepare("group1", tmp_path, manual_dir)
    assert builder.info.splits["train"].num_examples == 32561
    assert builder.info.splits["test"].num_examples == 16281
    labels = builder.as_dataset(split="test", as_supervised=True, batch_size=-1)[1]
    # adult.test has 3,846 rows of income above 50K, as census.load_adult counts.
    assert int(labels["income"].numpy().sum()) == 3846
