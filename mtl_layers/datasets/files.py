"""Locate, download and verify data files.

Every file that the loaders read is checked against a pinned SHA-256 digest of its
uncompressed content, so a corrupt or truncated copy fails with a clear error instead of
training on bad rows. Downloads go to a temporary file beside the target and are renamed
into place only after the digest matches, so a failed download never leaves a partial file.
"""

import gzip
import hashlib
import os
import pathlib
import shutil
import tempfile
import urllib.request
from typing import Optional, Sequence

from absl import logging

DATA_DIR_VARIABLE = "MTL_LAYERS_DATA_DIR"
CACHE_DIR_VARIABLE = "MTL_LAYERS_CACHE_DIR"


class ChecksumError(ValueError):
    """A file's SHA-256 digest differs from the pinned one."""


def default_data_dir() -> Optional[pathlib.Path]:
    """Return the folder named by `MTL_LAYERS_DATA_DIR`, or None when it is unset."""
    configured = os.environ.get(DATA_DIR_VARIABLE)
    return pathlib.Path(configured).expanduser() if configured else None


def cache_dir() -> pathlib.Path:
    """Return the download cache: `MTL_LAYERS_CACHE_DIR` or `~/.cache/mtl_layers`."""
    configured = os.environ.get(CACHE_DIR_VARIABLE)
    if configured:
        return pathlib.Path(configured).expanduser()
    return pathlib.Path.home() / ".cache" / "mtl_layers"


def open_text(path: pathlib.Path, encoding: str = "utf-8"):
    """Open a text file for reading, decompressing it when its name ends in `.gz`."""
    path = pathlib.Path(path)
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding=encoding, newline="")
    return open(path, "rt", encoding=encoding, newline="")


def content_sha256(path: pathlib.Path) -> str:
    """Return the SHA-256 hex digest of the file's content, decompressed if `.gz`."""
    digest = hashlib.sha256()
    opener = gzip.open if pathlib.Path(path).suffix == ".gz" else open
    try:
        with opener(path, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    except (OSError, EOFError) as error:
        raise ChecksumError(f"Could not read {path}: {error}. The file is corrupt or truncated.") from error
    return digest.hexdigest()


def verify_sha256(path: pathlib.Path, expected: str) -> None:
    """Raise ChecksumError unless the content of `path` has the SHA-256 `expected`."""
    actual = content_sha256(path)
    if actual != expected:
        raise ChecksumError(
            f"SHA-256 mismatch for {path}: expected {expected}, got {actual}. The file is "
            "corrupt or a different version; delete it and download the official file again."
        )


def check_data_dir(data_dir, expected: str, how_to_get: str) -> pathlib.Path:
    """Return an explicit `data_dir` as a path, or raise when it is not an existing folder.

    Loaders call this only for a `data_dir` that the caller passed, and then search only
    there, so a mistyped folder fails here instead of falling back to another copy.

    Args:
        data_dir: The folder that the caller passed. A leading `~` is expanded.
        expected: The files that the folder should contain, for the message.
        how_to_get: How to obtain the files, for the message.
    """
    path = pathlib.Path(data_dir).expanduser()
    if not path.is_dir():
        state = "is not a folder" if path.exists() else "does not exist"
        raise FileNotFoundError(
            f"`data_dir` must be an existing folder with {expected}. Received: "
            f"data_dir={str(data_dir)!r}, which {state}. {how_to_get}"
        )
    return path


def not_regular_files(folders: Sequence[pathlib.Path], names: Sequence[str]) -> str:
    """Return a sentence naming each `folder / name` that exists but is not a file, or "".

    `find_file` skips such paths (a folder named like a data file, for example), so a
    missing-file message adds this sentence to explain why they were not used.
    """
    blocked = [
        str(pathlib.Path(folder) / name)
        for folder in folders
        for name in names
        if (pathlib.Path(folder) / name).exists() and not (pathlib.Path(folder) / name).is_file()
    ]
    return f" These paths exist but are not regular files: {blocked}." if blocked else ""


def find_file(folders: Sequence[pathlib.Path], names: Sequence[str]) -> Optional[pathlib.Path]:
    """Return the first existing `folder / name`, trying folders in order, else None."""
    for folder in folders:
        for name in names:
            candidate = pathlib.Path(folder) / name
            if candidate.is_file():
                return candidate
    return None


def download(url: str, target: pathlib.Path, sha256: str) -> pathlib.Path:
    """Download `url` to `target` unless a verified copy is there, and return `target`.

    The content digest (of the decompressed content for `.gz` targets) must equal
    `sha256`. The file is written to a temporary sibling and renamed into place only
    after the check passes; on any failure the temporary file is removed.
    """
    target = pathlib.Path(target)
    if target.is_file():
        verify_sha256(target, sha256)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    temporary = pathlib.Path(temporary_name)
    try:
        logging.info("Downloading %s to %s", url, target)
        with os.fdopen(handle, "wb") as output, urllib.request.urlopen(url, timeout=60) as response:
            shutil.copyfileobj(response, output)
        # Verify under the target's name so a `.gz` target is checked decompressed.
        checked = temporary.with_name(temporary.name + target.suffix)
        temporary.rename(checked)
        temporary = checked
        verify_sha256(temporary, sha256)
        temporary.replace(target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return target
