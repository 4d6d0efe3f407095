"""Tests of the `movielens_sequences` TFDS builder on fake files and on MovieLens 100K."""

import os
import pathlib
from unittest import mock

import numpy as np
import pytest
import tensorflow_datasets as tfds

from mtl_layers.datasets import files, movielens
from mtl_layers.datasets.tfds import movielens_sequences
from mtl_layers.tfrs import movielens_data

FAKE_DIR = pathlib.Path(__file__).resolve().parent.parent / "tfds_fake_data" / "movielens_sequences"
FAKE_SHA256 = {name: files.content_sha256(FAKE_DIR / name) for name in movielens_data.MOVIELENS_SHA256}


# Preparing the real files takes most of the time of these tests. The builders run no
# Keras code, so only the Keras 3 run of tests/run.sh prepares them.
keras3_run_only = pytest.mark.skipif(
    os.environ.get("TF_USE_LEGACY_KERAS") == "1",
    reason="real files are prepared in the Keras 3 run only; the builders run no Keras code",
)


class MovielensSequencesTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = movielens_sequences.MovielensSequences
    EXAMPLE_DIR = FAKE_DIR
    SPLITS = {"train": 3}

    def setUp(self):
        super().setUp()
        patcher = mock.patch.dict(movielens_data.MOVIELENS_SHA256, FAKE_SHA256)
        patcher.start()
        self.addCleanup(patcher.stop)


def _prepare(data_dir, manual_dir):
    builder = movielens_sequences.MovielensSequences(data_dir=str(data_dir))
    download_config = tfds.download.DownloadConfig(manual_dir=str(manual_dir))
    builder.download_and_prepare(download_config=download_config)
    return builder


def _users(builder):
    return {
        int(example["user_id"]): example
        for example in tfds.as_numpy(builder.as_dataset(split="train"))
    }


def test_fake_steps_in_time_order(tmp_path):
    with mock.patch.dict(movielens_data.MOVIELENS_SHA256, FAKE_SHA256):
        users = _users(_prepare(tmp_path, FAKE_DIR))
    first = users[1]
    # Ties in time are ordered by movie id.
    np.testing.assert_array_equal(first["inputs"]["movie_id"], [1, 2, 3])
    np.testing.assert_array_equal(first["labels"]["rating"], [3.0, 5.0, 4.0])
    np.testing.assert_array_equal(first["labels"]["liked"], [0.0, 1.0, 1.0])
    assert first["inputs"]["mask"].all()
    assert first["inputs"]["features"].shape == (3, len(movielens.FEATURE_NAMES))


def test_fake_features_hold_previous_rating(tmp_path):
    with mock.patch.dict(movielens_data.MOVIELENS_SHA256, FAKE_SHA256):
        users = _users(_prepare(tmp_path, FAKE_DIR))
    features = users[3]["inputs"]["features"]
    column = {name: index for index, name in enumerate(movielens.FEATURE_NAMES)}
    assert features[0, column["has_previous"]] == 0.0
    np.testing.assert_allclose(features[1, column["previous_rating"]], 4.0 / 5.0)
    assert features[1, column["previous_liked"]] == 1.0
    # Movie 1 is flagged Animation and Children's in the fake u.item.
    assert features[1, column["genre_Animation"]] == 1.0


@keras3_run_only
def test_real_files_ratings_and_users(tmp_path, data_file):
    manual_dir = data_file("movielens-100k/u.data").parent.parent
    with mock.patch.object(
        tfds.download.DownloadManager, "download_and_extract", side_effect=AssertionError("network")
    ):
        builder = _prepare(tmp_path, manual_dir)
    assert builder.info.splits["train"].num_examples == 943
    lengths = [
        int(example["inputs"]["movie_id"].shape[0])
        for example in tfds.as_numpy(builder.as_dataset(split="train"))
    ]
    assert sum(lengths) == 100000
    # Every MovieLens 100K user has at least 20 ratings.
    assert min(lengths) >= 20


def test_partial_manual_folder_names_missing_file(tmp_path, caplog, offline_manager):
    for name in ("u.data", "u.item"):
        (tmp_path / name).write_bytes((FAKE_DIR / name).read_bytes())

    with pytest.raises(ConnectionError) as raised:
        movielens_sequences.MovielensSequences._source_folder(None, offline_manager(tmp_path))

    assert f"u.user in {tmp_path}" in caplog.text
    assert f"u.user in {tmp_path}" in "".join(raised.value.__notes__)
    assert str(raised.value) == f"offline: {movielens_data.MOVIELENS_URL}"
