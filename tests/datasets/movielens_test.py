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


@pytest.mark.parametrize("max_users", [0, 1, 2, -1, True, 2.5, "10"])
def test_max_users_invalid(max_users):
    # Checked before the files are looked up, so no data folder is needed.
    with pytest.raises(ValueError, match=r"`max_users` must be None or an integer >= 3"):
        load_movielens_sequences(max_users=max_users)


def test_max_users_minimum_follows_fractions():
    with pytest.raises(ValueError, match=r"integer >= 7,"):
        load_movielens_sequences(max_users=6, validation_fraction=0.05, test_fraction=0.85)


def test_max_users_minimum_fills_every_split(data_file):
    folder = data_file("movielens-100k/u.data").parent

    data = load_movielens_sequences(folder, max_users=3)

    assert len(set(data.train.user_id.tolist())) == 1
    assert len(set(data.validation.user_id.tolist())) == 1
    assert len(set(data.test.user_id.tolist())) == 1


def test_invalid_seed():
    with pytest.raises(ValueError, match="`seed` must be an integer >= 0"):
        load_movielens_sequences(seed=-1)


def test_explicit_data_dir_ignores_default(data_file, tmp_path, monkeypatch):
    # The data folder variable points at the real files, data_dir at an empty folder.
    monkeypatch.setenv(files.DATA_DIR_VARIABLE, str(data_file("movielens-100k/u.data").parent))
    monkeypatch.setenv(files.CACHE_DIR_VARIABLE, str(tmp_path / "cache"))
    empty = tmp_path / "empty"
    empty.mkdir()

    with pytest.raises(FileNotFoundError, match="not found in `data_dir`"):
        load_movielens_sequences(empty)


@pytest.mark.parametrize("kind, message", [("missing", "does not exist"), ("file", "is not a folder")])
def test_data_dir_must_be_a_folder(tmp_path, kind, message):
    data_dir = tmp_path / "movielens"
    if kind == "file":
        data_dir.write_text("not a folder")

    with pytest.raises(FileNotFoundError, match=message):
        load_movielens_sequences(data_dir)


def test_download_with_data_dir_uses_cache(data_file, tmp_path, monkeypatch):
    source = data_file("movielens-100k/u.data").parent
    cache = tmp_path / "cache"
    monkeypatch.setenv(files.CACHE_DIR_VARIABLE, str(cache))
    (cache / "movielens-100k").mkdir(parents=True)
    for name in ("u.data", "u.item", "u.user"):
        shutil.copy(source / name, cache / "movielens-100k" / name)
    empty = tmp_path / "empty"
    empty.mkdir()

    data = load_movielens_sequences(empty, download=True, max_users=3)

    assert data.data_dir == cache / "movielens-100k"


def test_download_with_data_dir_fetches_archive(data_file, tmp_path, monkeypatch):
    import zipfile

    from mtl_layers.tfrs import movielens_data

    source = data_file("movielens-100k/u.data").parent
    archive = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(archive, "w") as contents:
        for name in ("u.data", "u.item", "u.user"):
            contents.write(source / name, f"ml-100k/{name}")
    monkeypatch.setattr(movielens_data, "MOVIELENS_URL", archive.as_uri())
    # The data folder variable has the files too, but download=True must not read them.
    monkeypatch.setenv(files.DATA_DIR_VARIABLE, str(source))
    monkeypatch.setenv(files.CACHE_DIR_VARIABLE, str(tmp_path / "cache"))
    empty = tmp_path / "empty"
    empty.mkdir()

    data = load_movielens_sequences(empty, download=True, max_users=3)

    assert data.data_dir == tmp_path / "cache" / "movielens-100k"
    assert (tmp_path / "cache" / "movielens-100k" / "u.data").is_file()


def test_data_dir_variable_must_be_a_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(files.DATA_DIR_VARIABLE, str(tmp_path / "u.data"))
    monkeypatch.setenv(files.CACHE_DIR_VARIABLE, str(tmp_path / "cache"))
    (tmp_path / "u.data").write_text("")

    with pytest.raises(FileNotFoundError, match="MTL_LAYERS_DATA_DIR='.*u.data', which is not a folder"):
        load_movielens_sequences()
