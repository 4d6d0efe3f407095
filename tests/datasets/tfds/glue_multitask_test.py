"""Tests of the `glue_multitask` TFDS builder on fake files and on the real GLUE files."""

import collections
import os
import pathlib
import shutil
from unittest import mock

import numpy as np
import pytest
import tensorflow_datasets as tfds

from mtl_layers.datasets import files, glue
from mtl_layers.datasets.tfds import glue_multitask

FAKE_DIR = pathlib.Path(__file__).resolve().parent.parent / "tfds_fake_data" / "glue_multitask"
# The fake files sit in the `glue/` subfolder of the manual folder.
FAKE_SHA256 = {
    (task, split): files.content_sha256(FAKE_DIR / "glue" / task / f"{split}.tsv")
    for task, split in glue.SHA256
}


# Preparing the real files takes most of the time of these tests. The builders run no
# Keras code, so only the Keras 3 run of tests/run.sh prepares them.
keras3_run_only = pytest.mark.skipif(
    os.environ.get("TF_USE_LEGACY_KERAS") == "1",
    reason="real files are prepared in the Keras 3 run only; the builders run no Keras code",
)


class GlueMultitaskTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = glue_multitask.GlueMultitask
    EXAMPLE_DIR = FAKE_DIR
    SPLITS = {"train": 11, "validation": 5}

    def setUp(self):
        super().setUp()
        patcher = mock.patch.dict(glue.SHA256, FAKE_SHA256)
        patcher.start()
        self.addCleanup(patcher.stop)


def _prepare(data_dir, manual_dir):
    builder = glue_multitask.GlueMultitask(data_dir=str(data_dir))
    download_config = tfds.download.DownloadConfig(manual_dir=str(manual_dir))
    builder.download_and_prepare(download_config=download_config)
    return builder


def test_fake_tasks_sentences_and_labels(tmp_path):
    with mock.patch.dict(glue.SHA256, FAKE_SHA256):
        builder = _prepare(tmp_path, FAKE_DIR)
    examples = list(tfds.as_numpy(builder.as_dataset(split="train", as_supervised=True)))
    by_sentence = {inputs["sentence"].decode(): (inputs, labels) for inputs, labels in examples}
    inputs, labels = by_sentence["A man plays a guitar."]
    assert glue.TASK_NAMES[inputs["task_id"]] == "STS-B"
    assert inputs["second_sentence"] == b"A man plays music."
    np.testing.assert_allclose(labels["label"], 3.8)
    inputs, labels = by_sentence["a warm , funny film"]
    assert glue.TASK_NAMES[inputs["task_id"]] == "SST-2"
    assert inputs["second_sentence"] == b""
    assert labels["label"] == 1.0
    # A field that starts with a quote stays one field (CSV quoting is off).
    inputs, labels = by_sentence["Shares rose."]
    assert inputs["second_sentence"] == b'"Rain fell" in town.'
    assert labels["label"] == 0.0
    assert by_sentence["The shop is closed."][1]["label"] == 0.0


def test_missing_mrpc_names_file_and_folder(tmp_path):
    manual_dir = tmp_path / "manual"
    shutil.copytree(FAKE_DIR / "glue", manual_dir / "glue")
    shutil.rmtree(manual_dir / "glue" / "MRPC")
    with mock.patch.dict(glue.SHA256, FAKE_SHA256), mock.patch.object(
        tfds.download.DownloadManager, "download_and_extract", side_effect=AssertionError("network")
    ):
        with pytest.raises(FileNotFoundError, match=r"MRPC/train.tsv .*manual folder") as error:
            _prepare(tmp_path / "data", manual_dir)
    assert str(manual_dir / "glue") in str(error.value)


@keras3_run_only
def test_real_files_task_sizes(tmp_path, data_file):
    manual_dir = data_file("glue/SST-2/train.tsv").parent.parent.parent
    with mock.patch.object(
        tfds.download.DownloadManager, "download_and_extract", side_effect=AssertionError("network")
    ):
        builder = _prepare(tmp_path, manual_dir)
    assert builder.info.splits["train"].num_examples == 87807
    assert builder.info.splits["validation"].num_examples == 4100
    task_ids = builder.as_dataset(split="train", batch_size=-1)["inputs"]["task_id"].numpy()
    counts = collections.Counter(glue.TASK_NAMES[task_id] for task_id in task_ids)
    assert counts == {"CoLA": 8551, "MRPC": 3668, "RTE": 2490, "STS-B": 5749, "SST-2": 67349}


def test_partial_manual_folder_names_missing_file(tmp_path, caplog, offline_manager):
    (tmp_path / "glue" / "CoLA").mkdir(parents=True)
    shutil.copy(FAKE_DIR / "glue" / "CoLA" / "dev.tsv", tmp_path / "glue" / "CoLA" / "dev.tsv")

    with pytest.raises(ConnectionError) as raised:
        glue_multitask.GlueMultitask._task_folder(None, offline_manager(tmp_path), "CoLA")

    missing = f"train.tsv in {tmp_path / 'glue' / 'CoLA'}"
    assert missing in caplog.text
    assert missing in "".join(raised.value.__notes__)
