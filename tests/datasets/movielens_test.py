"""Tests for the MovieLens 100K sequence loader, on the real files."""

import shutil

import numpy as np
import pytest

from mtl_layers.datasets import files
from mtl_layers.datasets.movielens import FEATURE_NAMES, load_movielens_sequences


@pytest.fixture(scope="module")
def sequences(data_file):
    folder = data_file("movielens-100k/u.data").parent
    return load_movielens_sequences(folder, max_length=50, seed=0)


def test_every_rating_appears_once(sequences):
    splits = (sequences.train, sequences.validation, sequences.test)
    assert sum(int(split.mask.sum()) for split in splits) == 100_000
    users = [set(split.user_id.tolist()) for split in splits]
    assert len(users[0] | users[1] | users[2]) == 943
    assert not users[0] & users[1]
    assert not users[0] & users[2]
    assert not users[1] & users[2]
    counts = np.bincount(
        np.concatenate([split.labels["rating"][split.mask] for split in splits]).astype(int)
    )
    # Rating counts of ml-100k: 1=6,110, 2=11,370, 3=27,145, 4=34,174, 5=21,201.
    np.testing.assert_array_equal(counts[1:], [6110, 11370, 27145, 34174, 21201])


def test_steps_are_time_ordered_and_padded_right(sequences, data_file):
    ratings = np.loadtxt(data_file("movielens-100k/u.data"), dtype=np.int64, delimiter="\t")
    split = sequences.train
    row = 0
    user = split.user_id[row]
    user_ratings = ratings[ratings[:, 0] == user]
    user_ratings = user_ratings[np.lexsort((user_ratings[:, 1], user_ratings[:, 3]))]
    length = int(split.mask[row].sum())
    np.testing.assert_array_equal(split.movie_id[row, :length], user_ratings[:length, 1])
    np.testing.assert_array_equal(split.labels["rating"][row, :length], user_ratings[:length, 2])
    assert not split.mask[row, length:].any()
    # The previous rating is an input; the current rating is not.
    previous = split.features[row, 1:length, FEATURE_NAMES.index("previous_rating")] * 5
    np.testing.assert_allclose(previous, user_ratings[: length - 1, 2], atol=1e-5)
    assert split.features[row, 0, FEATURE_NAMES.index("has_previous")] == 0


def test_labels_and_features(sequences):
    split = sequences.test
    liked = split.labels["liked"][split.mask]
    rating = split.labels["rating"][split.mask]
    np.testing.assert_array_equal(liked, (rating >= 4).astype(np.float32))
    assert split.features.shape[-1] == len(FEATURE_NAMES) == 23
    assert not split.features[~split.mask].any()
    assert [task.name for task in sequences.tasks] == ["rating", "liked"]


def test_corrupt_file_is_rejected(data_file, tmp_path):
    folder = data_file("movielens-100k/u.data").parent
    for name in ("u.data", "u.item", "u.user"):
        shutil.copy(folder / name, tmp_path / name)
    data = (tmp_path / "u.data").read_bytes()
    # Change one rating, as in a known tampered public copy.
    (tmp_path / "u.data").write_bytes(data.replace(b"\t3\t", b"\t4\t", 1))
    with pytest.raises(files.ChecksumError, match="u.data"):
        load_movielens_sequences(tmp_path)


def test_missing_files_raise(tmp_path, monkeypatch):
    monkeypatch.delenv(files.DATA_DIR_VARIABLE, raising=False)
    monkeypatch.setenv(files.CACHE_DIR_VARIABLE, str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match="download=True"):
        load_movielens_sequences(tmp_path)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"max_length": 1}, "max_length"), ({"test_fraction": 0.0}, "test_fraction"),
     ({"validation_fraction": 0.5, "test_fraction": 0.5}, "below 1")],
)  # fmt: skip
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_movielens_sequences(**kwargs)
