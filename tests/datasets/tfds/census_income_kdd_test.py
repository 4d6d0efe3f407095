"""Tests of the `census_income_kdd` TFDS builder on fake files and on the real test file."""

import os
import pathlib
from unittest import mock

import pytest
import tensorflow_datasets as tfds

from mtl_layers.datasets import census, files
from mtl_layers.datasets.tfds import census_income_kdd

FAKE_DIR = pathlib.Path(__file__).resolve().parent.parent / "tfds_fake_data" / "census_income_kdd"
# The fake files sit in the `census-income-kdd/` subfolder of the manual folder.
FAKE_SHA256 = {
    name: files.content_sha256(FAKE_DIR / "census-income-kdd" / name) for name in census.KDD_SHA256
}


# Preparing the real files takes most of the time of these tests. The builders run no
# Keras code, so only the Keras 3 run of tests/run.sh prepares them.
keras3_run_only = pytest.mark.skipif(
    os.environ.get("TF_USE_LEGACY_KERAS") == "1",
    reason="real files are prepared in the Keras 3 run only; the builders run no Keras code",
)


class CensusIncomeKddTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = census_income_kdd.CensusIncomeKdd
    EXAMPLE_DIR = FAKE_DIR
    SPLITS = {"train": 3, "test": 2}
    BUILDER_CONFIG_NAMES_TO_TEST = ["group1", "group2"]

    def setUp(self):
        super().setUp()
        patcher = mock.patch.dict(census.KDD_SHA256, FAKE_SHA256)
        patcher.start()
        self.addCleanup(patcher.stop)


class CensusIncomeKddTestFileTest(CensusIncomeKddTest):
    SPLITS = {"test": 2}
    BUILDER_CONFIG_NAMES_TO_TEST = ["group1_test_file", "group2_test_file"]


def _prepare(config, data_dir, manual_dir):
    builder = census_income_kdd.CensusIncomeKdd(config=config, data_dir=str(data_dir))
    download_config = tfds.download.DownloadConfig(manual_dir=str(manual_dir))
    builder.download_and_prepare(download_config=download_config)
    return builder


def test_fake_inputs_drop_weight_and_labels(tmp_path):
    with mock.patch.dict(census.KDD_SHA256, FAKE_SHA256):
        builder = _prepare("group2", tmp_path, FAKE_DIR)
    examples = list(tfds.as_numpy(builder.as_dataset(split="train", as_supervised=True)))
    inputs, labels = examples[0]
    for removed in ("instance_weight", "income", "marital_stat", "education"):
        assert removed not in inputs
    assert len(inputs) == 38
    assert sorted(labels) == ["college_education", "never_married"]
    by_age = {float(inputs["age"]): labels for inputs, labels in examples}
    assert by_age[34.0]["college_education"] == 1.0
    assert by_age[58.0]["college_education"] == 0.0
    assert by_age[27.0]["never_married"] == 0.0
    wages = {float(inputs["age"]): float(inputs["wage_per_hour"]) for inputs, _ in examples}
    assert wages[58.0] == 1200.0


def _manual_dir_with_test_file_only(tmp_path):
    """Return a manual folder that contains the fake test file but no training file."""
    manual_dir = tmp_path / "manual"
    manual_dir.mkdir()
    (manual_dir / "census-income.test").write_bytes(
        (FAKE_DIR / "census-income-kdd" / "census-income.test").read_bytes()
    )
    return manual_dir


def test_missing_training_file_is_downloaded(tmp_path):
    manual_dir = _manual_dir_with_test_file_only(tmp_path)
    with mock.patch.dict(census.KDD_SHA256, FAKE_SHA256), mock.patch.object(
        tfds.download.DownloadManager, "download_and_extract", side_effect=ConnectionError("offline")
    ) as download:
        with pytest.raises(ConnectionError):
            _prepare("group1", tmp_path / "data", manual_dir)
    assert download.call_args.args[0] == census.KDD_URL + "census-income.data.gz"


@keras3_run_only
def test_real_test_file_row_count(tmp_path, data_file):
    manual_dir = data_file("census-income-kdd/census-income.test.gz").parent.parent
    with mock.patch.object(
        tfds.download.DownloadManager, "download_and_extract", side_effect=AssertionError("network")
    ):
        builder = _prepare("group1_test_file", tmp_path, manual_dir)
    assert builder.info.splits["test"].num_examples == 99762
    labels = builder.as_dataset(split="test", as_supervised=True, batch_size=-1)[1]
    # census-income.test has 6,186 rows labelled "50000+.".
    assert int(labels["income"].numpy().sum()) == 6186


def test_missing_file_is_logged_and_noted(tmp_path, caplog):
    manual_dir = _manual_dir_with_test_file_only(tmp_path)
    with mock.patch.dict(census.KDD_SHA256, FAKE_SHA256), mock.patch.object(
        tfds.download.DownloadManager, "download_and_extract", side_effect=ConnectionError("offline")
    ):
        with pytest.raises(ConnectionError) as raised:
            _prepare("group1", tmp_path / "data", manual_dir)

    assert "census-income.data (or census-income.data.gz)" in caplog.text
    assert str(manual_dir) in "".join(raised.value.__notes__)
