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
import zipfile
import zlib
from typing import Optional, Sequence

from absl import logging

DATA_DIR_VARIABLE = "MTL_LAYERS_DATA_DIR"
CACHE_DIR_VARIABLE = "MTL_LAYERS_CACHE_DIR"


class ChecksumError(ValueError):
    """A file's SHA-256 digest differs from the pinned one."""


class DownloadError(OSError):
    """A download failed, or its archive is unreadable or lacks a data file."""


def describe_missing_folder(path: pathlib.Path) -> str:
    """Return why `path` is not a usable folder, as a clause such as "does not exist"."""
    path = pathlib.Path(path)
    if path.is_symlink() and not path.exists():
        return f"is a broken symbolic link to {os.readlink(path)}"
    return "is not a folder" if path.exists() else "does not exist"


def default_data_dir() -> Optional[pathlib.Path]:
    """Return the folder named by `MTL_LAYERS_DATA_DIR`, or None when it is unset.

    Raises:
        FileNotFoundError: The variable is set but does not name an existing folder. A
            mistyped setting fails here instead of letting the loaders silently read
            the download cache.
    """
    configured = os.environ.get(DATA_DIR_VARIABLE)
    if not configured:
        return None
    path = pathlib.Path(configured).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"`{DATA_DIR_VARIABLE}` must name an existing folder. Received: "
            f"{DATA_DIR_VARIABLE}={configured!r}, which {describe_missing_folder(path)}. "
            "Correct the variable, or unset it to use only the download cache "
            f"({cache_dir()}), or pass `data_dir`."
        )
    return path


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


def check_download_sha256(path: pathlib.Path, expected: str, url: str, target: pathlib.Path) -> None:
    """Raise ChecksumError unless the downloaded `path` has the SHA-256 `expected`.

    `path` is a temporary file that the caller deletes on failure, so the message names
    the `url` and the final `target` instead.
    """
    try:
        actual = content_sha256(path)
    except ChecksumError as error:
        actual = f"unreadable ({error.__cause__})"
    if actual != expected:
        raise ChecksumError(
            f"{target.name} as obtained from {url} (the file itself, or extracted from the "
            f"archive) differs from the official file: its SHA-256 "
            f"is {actual}, expected {expected}. It was not saved at {target}. The server "
            "may have sent an error page, a truncated file or a changed file, so retry "
            f"later, or download the official file by hand and put it at {target}."
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
        raise FileNotFoundError(
            f"`data_dir` must be an existing folder with {expected}. Received: "
            f"data_dir={str(data_dir)!r}, which {describe_missing_folder(path)}. {how_to_get}"
        )
    return path


def not_regular_files(folders: Sequence[pathlib.Path], names: Sequence[str]) -> str:
    """Return sentences naming each `folder / name` that is present but unusable, or "".

    `find_file` skips such paths (a folder named like a data file, or a symbolic link
    whose target is missing or is a link loop), so a missing-file message adds these
    sentences to explain why they were not used.
    """
    blocked = []
    broken_links = []
    for folder in folders:
        for name in names:
            candidate = pathlib.Path(folder) / name
            if candidate.exists() and not candidate.is_file():
                blocked.append(str(candidate))
            elif candidate.is_symlink() and not candidate.exists():
                broken_links.append(f"{candidate} -> {os.readlink(candidate)}")
    message = ""
    if blocked:
        message += f" These paths exist but are not regular files: {blocked}."
    if broken_links:
        message += (
            f" These paths are broken symbolic links, whose targets do not exist or are "
            f"link loops: {broken_links}. Point the links at the data files or replace "
            "them with copies."
        )
    return message


def fetch_url(url: str, output, target: pathlib.Path, manual_step: Optional[str] = None) -> None:
    """Write the body of `url` to the binary stream `output`.

    Args:
        url: The address to download.
        output: A binary stream open for writing.
        target: Where the caller places the downloaded data, for the message.
        manual_step: How to place the data by hand, for the message, as a clause such
            as "download it by hand and put it at /path". By default, the downloaded
            file is to be put at `target`.

    Raises:
        DownloadError: The request failed (HTTP error, refused connection, timeout).
    """
    manual_step = manual_step or f"download the file by hand and put it at {target}"
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            shutil.copyfileobj(response, output)
    except OSError as error:
        # urllib's URLError and HTTPError, socket timeouts and connection resets are
        # all OSError subclasses.
        raise DownloadError(
            f"Could not download {url} to {target}: {error}. Check the URL and the "
            f"network connection and retry, or {manual_step}."
        ) from error


def open_zip(path: pathlib.Path, url: str, manual_step: str) -> zipfile.ZipFile:
    """Open the zip archive that was downloaded from `url` into `path`.

    Raises:
        DownloadError: The file is not a readable zip archive. The message ends with
            `manual_step`, a clause that names where to put the data files by hand.
    """
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile as error:
        raise DownloadError(
            f"The archive downloaded from {url} is not a valid zip file ({error}). The "
            "download was cut short, or the server sent another file such as an error "
            f"page. Retry later, or {manual_step}."
        ) from error


def read_zip_member(archive: zipfile.ZipFile, member: str, output, url: str, manual_step: str) -> None:
    """Copy `member` of the `archive` downloaded from `url` to the binary stream `output`.

    Raises:
        DownloadError: The archive has no `member`, or the member is corrupt. The
            message ends with `manual_step`, as in `open_zip`.
    """
    try:
        with archive.open(member) as source:
            shutil.copyfileobj(source, output)
    except KeyError as error:
        raise DownloadError(
            f"The archive downloaded from {url} has no member {member}, so it is not "
            f"the official archive. Retry later, or {manual_step}."
        ) from error
    except (zipfile.BadZipFile, EOFError, zlib.error) as error:
        raise DownloadError(
            f"Member {member} of the archive downloaded from {url} is corrupt ({error}). "
            f"Retry later, or {manual_step}."
        ) from error


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

    Raises:
        DownloadError: The request failed.
        ChecksumError: The downloaded content, or a copy already at `target`, differs
            from the official file.
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
        with os.fdopen(handle, "wb") as output:
            fetch_url(url, output, target)
        # Verify under the target's name so a `.gz` target is checked decompressed.
        checked = temporary.with_name(temporary.name + target.suffix)
        temporary.rename(checked)
        temporary = checked
        check_download_sha256(temporary, sha256, url, target)
        temporary.replace(target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return target
