"""Tests of file lookup, SHA-256 checks and atomic downloads (file:// URLs, no network)."""

import gzip
import hashlib
import io
import urllib.error
import urllib.request
import zipfile

import pytest

from mtl_layers.datasets import files


def _write(path, content: bytes):
    path.write_bytes(content)
    return hashlib.sha256(content).hexdigest()


def test_download_verifies_and_places_file(tmp_path):
    source = tmp_path / "source.csv"
    digest = _write(source, b"a,b\n1,2\n")
    target = tmp_path / "cache" / "data.csv"
    assert files.download(source.as_uri(), target, digest) == target
    assert target.read_bytes() == b"a,b\n1,2\n"


def test_download_gz_checks_decompressed_content(tmp_path):
    content = b"x" * 1000
    source = tmp_path / "source.gz"
    source.write_bytes(gzip.compress(content))
    target = tmp_path / "cache" / "data.gz"
    files.download(source.as_uri(), target, hashlib.sha256(content).hexdigest())
    assert gzip.decompress(target.read_bytes()) == content


def test_download_mismatch_leaves_no_file(tmp_path):
    source = tmp_path / "source.csv"
    _write(source, b"tampered")
    target = tmp_path / "cache" / "data.csv"
    with pytest.raises(files.ChecksumError, match="differs from the official file"):
        files.download(source.as_uri(), target, "0" * 64)
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_download_failure_leaves_no_file(tmp_path):
    target = tmp_path / "cache" / "data.csv"
    with pytest.raises(OSError):
        files.download((tmp_path / "missing.csv").as_uri(), target, "0" * 64)
    assert list(target.parent.iterdir()) == []


def test_download_reuses_verified_copy(tmp_path):
    target = tmp_path / "data.csv"
    digest = _write(target, b"cached")
    # The URL is never opened when a verified copy exists.
    assert files.download("file:///nonexistent/never-read", target, digest) == target


def test_download_rejects_corrupt_cached_copy(tmp_path):
    target = tmp_path / "data.csv"
    _write(target, b"corrupt")
    with pytest.raises(files.ChecksumError):
        files.download("file:///nonexistent", target, "1" * 64)
    assert target.read_bytes() == b"corrupt"


def test_truncated_gzip_is_reported(tmp_path):
    path = tmp_path / "broken.gz"
    path.write_bytes(gzip.compress(bytes(range(256)) * 400)[:200])
    with pytest.raises(files.ChecksumError, match="corrupt or truncated"):
        files.content_sha256(path)


def test_find_file_order(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.gz").write_bytes(b"")
    assert files.find_file([tmp_path / "a", tmp_path / "b"], ["x", "x.gz"]) == tmp_path / "b" / "x.gz"
    assert files.find_file([tmp_path], ["x"]) is None


def test_check_data_dir_accepts_folder(tmp_path):
    assert files.check_data_dir(tmp_path, "x.csv", "Get it.") == tmp_path


@pytest.mark.parametrize("kind, state", [("missing", "does not exist"), ("file", "is not a folder")])
def test_check_data_dir_rejects(tmp_path, kind, state):
    path = tmp_path / "data"
    if kind == "file":
        path.write_text("")

    with pytest.raises(FileNotFoundError, match=f"with x.csv. Received: data_dir='{path}', which {state}. Get it."):
        files.check_data_dir(path, "x.csv", "Get it.")


def test_not_regular_files_names_folders(tmp_path):
    (tmp_path / "x.csv").mkdir()

    assert str(tmp_path / "x.csv") in files.not_regular_files([tmp_path], ["x.csv", "y.csv"])
    assert files.not_regular_files([tmp_path], ["y.csv"]) == ""


def test_download_mismatch_names_url_and_target(tmp_path):
    source = tmp_path / "source.csv"
    _write(source, b"tampered")
    target = tmp_path / "cache" / "data.csv"

    with pytest.raises(files.ChecksumError) as raised:
        files.download(source.as_uri(), target, "0" * 64)

    message = str(raised.value)
    assert source.as_uri() in message
    assert f"put it at {target}." in message
    assert "differs from the official file" in message
    assert "delete it" not in message


def test_local_mismatch_keeps_delete_advice(tmp_path):
    path = tmp_path / "data.csv"
    _write(path, b"corrupt")

    with pytest.raises(files.ChecksumError, match=f"SHA-256 mismatch for {path}: .* delete it"):
        files.verify_sha256(path, "1" * 64)


def test_download_http_error_names_url(tmp_path, monkeypatch):
    url = "http://127.0.0.1:9/data.csv"

    def not_found(request, timeout):
        raise urllib.error.HTTPError(url, 404, "File not found", {}, None)

    monkeypatch.setattr(urllib.request, "urlopen", not_found)
    target = tmp_path / "cache" / "data.csv"

    with pytest.raises(files.DownloadError) as raised:
        files.download(url, target, "0" * 64)

    assert f"Could not download {url} to {target}: HTTP Error 404" in str(raised.value)
    assert f"put it at {target}." in str(raised.value)
    assert list(target.parent.iterdir()) == []


@pytest.mark.parametrize("kind, state", [("missing", "does not exist"), ("file", "is not a folder")])
def test_default_data_dir_rejects(tmp_path, monkeypatch, kind, state):
    path = tmp_path / "data"
    if kind == "file":
        path.write_text("")
    monkeypatch.setenv(files.DATA_DIR_VARIABLE, str(path))

    with pytest.raises(FileNotFoundError, match=f"Received: MTL_LAYERS_DATA_DIR='{path}', which {state}"):
        files.default_data_dir()


def test_default_data_dir_unset(monkeypatch):
    monkeypatch.delenv(files.DATA_DIR_VARIABLE, raising=False)

    assert files.default_data_dir() is None


def test_not_regular_files_names_broken_link(tmp_path):
    (tmp_path / "x.csv").symlink_to(tmp_path / "gone.csv")

    message = files.not_regular_files([tmp_path], ["x.csv"])

    assert "broken symbolic links" in message
    assert f"{tmp_path / 'x.csv'} -> {tmp_path / 'gone.csv'}" in message


def test_check_data_dir_names_broken_link(tmp_path):
    (tmp_path / "data").symlink_to(tmp_path / "gone")

    with pytest.raises(FileNotFoundError, match="is a broken symbolic link to .*gone"):
        files.check_data_dir(tmp_path / "data", "x.csv", "Get it.")


def test_open_zip_rejects_other_file(tmp_path):
    path = tmp_path / "archive.zip"
    path.write_bytes(b"<html>Not found</html>")

    with pytest.raises(files.DownloadError, match="http://host/a.zip is not a valid zip file.*Retry later, or fix it"):
        files.open_zip(path, "http://host/a.zip", "fix it")


def test_read_zip_member_missing(tmp_path):
    path = tmp_path / "archive.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("other.txt", "x")

    with zipfile.ZipFile(path) as archive, pytest.raises(files.DownloadError, match="has no member a/b.tsv"):
        files.read_zip_member(archive, "a/b.tsv", io.BytesIO(), "http://host/a.zip", "fix it")
