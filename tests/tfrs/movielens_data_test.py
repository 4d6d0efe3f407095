"""Tests of the MovieLens 100K per-rating loader on the real files."""

import shutil
import zipfile

import numpy as np
import pytest

from mtl_layers.datasets import files
from mtl_layers.tfrs import movielens_data


@pytest.fixture(scope="module")
def movielens_dir(data_root):
    return data_root / "movielens-100k"


@pytest.fixture(scope="module")
def ratings(data_root):
    return movielens_data.load_movielens_ratings(data_dir=data_root)


def test_split_sizes_cover_all_ratings(ratings):
    assert len(ratings.train) == 70_000
    assert len(ratings.validation) == 10_000
    assert len(ratings.test) == 20_000


def test_raw_feature_dtypes(ratings):
    features = ratings.train.features
    assert features["user_id"].dtype == np.int64
    assert features["movie_id"].dtype == np.int64
    assert features["user_age"].dtype == np.float32
    assert features["movie_year"].dtype == np.float32
    assert features["user_gender"].dtype == object
    assert set(features["user_gender"]) == {"M", "F"}
    assert not np.isnan(features["movie_year"]).any()


def test_labels_rating_and_liked(ratings):
    labels = ratings.train.labels
    assert set(np.unique(labels["rating"])) == {1.0, 2.0, 3.0, 4.0, 5.0}
    np.testing.assert_array_equal(labels["liked"], (labels["rating"] >= 4).astype(np.float32))
    total_liked = sum(split.labels["liked"].sum() for split in (ratings.train, ratings.validation, ratings.test))
    # 34,174 ratings of 4 and 21,201 of 5 in u.data.
    assert total_liked == 55_375


def test_feature_specs_and_candidates(ratings):
    specs = {spec.name: spec for spec in ratings.feature_specs}
    assert sorted(specs) == sorted(ratings.user_features + ratings.movie_features)
    assert specs["user_id"].kind == "integer_categorical"
    assert len(specs["user_id"].vocabulary) == 943
    assert specs["user_occupation"].kind == "categorical"
    assert specs["user_age"].kind == "numeric"
    assert len(ratings.movies["movie_id"]) == 1682
    assert sorted(ratings.movies) == sorted(ratings.movie_features)
    assert [task.name for task in ratings.tasks] == ["rating", "liked"]


def test_split_is_seeded(data_root, ratings):
    again = movielens_data.load_movielens_ratings(data_dir=data_root)
    np.testing.assert_array_equal(again.test.features["user_id"], ratings.test.features["user_id"])
    other = movielens_data.load_movielens_ratings(data_dir=data_root, seed=1)
    assert not np.array_equal(other.test.features["user_id"], ratings.test.features["user_id"])


def test_tampered_file_rejected(movielens_dir, tmp_path):
    for name in movielens_data.MOVIELENS_SHA256:
        shutil.copy(movielens_dir / name, tmp_path / name)
    (tmp_path / "u.user").chmod(0o644)
    text = (tmp_path / "u.user").read_text()
    (tmp_path / "u.user").write_text(text.replace("1|24|M|", "1|25|M|", 1))
    with pytest.raises(files.ChecksumError, match="SHA-256 mismatch"):
        movielens_data.load_movielens_ratings(data_dir=tmp_path)


def test_missing_files_message(tmp_path, monkeypatch):
    monkeypatch.setenv(files.DATA_DIR_VARIABLE, str(tmp_path / "nowhere"))
    monkeypatch.setenv(files.CACHE_DIR_VARIABLE, str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match="download=True"):
        movielens_data.load_movielens_ratings(data_dir=tmp_path)


def test_explicit_data_dir_does_not_fall_back(movielens_dir, tmp_path, monkeypatch):
    # The data folder variable has the files, but an explicit `data_dir` is searched alone.
    monkeypatch.setenv(files.DATA_DIR_VARIABLE, str(movielens_dir))
    monkeypatch.setenv(files.CACHE_DIR_VARIABLE, str(tmp_path / "cache"))

    with pytest.raises(FileNotFoundError, match="not found in `data_dir`"):
        movielens_data.find_movielens_dir(tmp_path)


def test_missing_data_dir_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        movielens_data.find_movielens_dir(tmp_path / "missing")


def test_download_extracts_verified_files(movielens_dir, tmp_path, monkeypatch):
    archive = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(archive, "w") as stream:
        for name in movielens_data.MOVIELENS_SHA256:
            stream.write(movielens_dir / name, f"ml-100k/{name}")
    monkeypatch.delenv(files.DATA_DIR_VARIABLE, raising=False)
    monkeypatch.setenv(files.CACHE_DIR_VARIABLE, str(tmp_path / "cache"))
    folder = movielens_data.find_movielens_dir(download=True, url=archive.as_uri())
    assert folder == tmp_path / "cache" / "movielens-100k"
    assert sorted(path.name for path in folder.iterdir()) == ["u.data", "u.item", "u.user"]


@pytest.mark.parametrize(
    "options, message",
    [
        ({"test_fraction": 1.0}, "`test_fraction` must be in"),
        ({"validation_fraction": -0.1}, "`validation_fraction` must be in"),
        ({"test_fraction": 0.6, "validation_fraction": 0.5}, "must be < 1"),
    ],
)
def test_invalid_fractions_rejected(data_root, options, message):
    with pytest.raises(ValueError, match=message):
        movielens_data.load_movielens_ratings(data_dir=data_root, **options)
