"""Tests of file lookup, SHA-256 checks and atomic downloads (file:// URLs, no network)."""

import gzip
import hashlib

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
    with pytest.raises(files.ChecksumError, match="SHA-256 mismatch"):
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
