"""MovieLens 100K download and lookup errors: missing files, corrupt archives, failed requests."""

import pytest

from mtl_layers.datasets import files
from mtl_layers.datasets.movielens import load_movielens_sequences
from mtl_layers.tfrs import movielens_data


def test_missing_file_named_alone(data_file, tmp_path):
    source = data_file("movielens-100k/u.data").parent
    for name in ("u.data", "u.item"):
        (tmp_path / name).write_bytes((source / name).read_bytes())

    with pytest.raises(FileNotFoundError) as raised:
        load_movielens_sequences(tmp_path)

    assert f"'{tmp_path}': ['u.user']" in str(raised.value)


def test_download_corrupt_archive_message(tmp_path, monkeypatch):
    archive = tmp_path / "ml-100k.zip"
    archive.write_bytes(b"<html>Service unavailable</html>")
    monkeypatch.setattr(movielens_data, "MOVIELENS_URL", archive.as_uri())
    monkeypatch.delenv(files.DATA_DIR_VARIABLE, raising=False)
    monkeypatch.setenv(files.CACHE_DIR_VARIABLE, str(tmp_path / "cache"))

    with pytest.raises(files.DownloadError) as raised:
        load_movielens_sequences(download=True)

    assert f"{archive.as_uri()} is not a valid zip file" in str(raised.value)
    assert f"into {tmp_path / 'cache' / 'movielens-100k'}." in str(raised.value)


def test_download_error_names_url(tmp_path, monkeypatch):
    url = (tmp_path / "missing.zip").as_uri()
    monkeypatch.setattr(movielens_data, "MOVIELENS_URL", url)
    monkeypatch.delenv(files.DATA_DIR_VARIABLE, raising=False)
    monkeypatch.setenv(files.CACHE_DIR_VARIABLE, str(tmp_path / "cache"))

    with pytest.raises(files.DownloadError, match=f"Could not download {url} to .*cache/movielens-100k"):
        load_movielens_sequences(download=True)
