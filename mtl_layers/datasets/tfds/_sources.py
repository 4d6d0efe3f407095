"""Find the source files of a builder: in TFDS's manual folder first, else download them.

Every builder looks for its files in the manual folder (`--manual_dir` of `tfds build`,
or `download_config=tfds.download.DownloadConfig(manual_dir=...)`) and in the subfolder
that the library's data layout uses there (for example `<manual_dir>/uci-adult`), so one
folder with all data sets serves every builder. A file found in neither place is
downloaded with TFDS's download manager, after a warning that names the files missing
from the manual folder. Every file, found or downloaded, is then checked
against the SHA-256 digest that the library's loaders pin for its content.
"""

import pathlib
from typing import Callable, List, Optional, Sequence

from absl import logging

MMOE_CITATION = """\
@inproceedings{ma2018mmoe,
  title={Modeling Task Relationships in Multi-task Learning with Multi-gate Mixture-of-Experts},
  author={Ma, Jiaqi and Zhao, Zhe and Yi, Xinyang and Chen, Jilin and Hong, Lichan and Chi, Ed H.},
  booktitle={Proceedings of the 24th ACM SIGKDD International Conference on Knowledge Discovery \\& Data Mining},
  year={2018},
  doi={10.1145/3219819.3220007}
}"""


def manual_folder(dl_manager) -> Optional[pathlib.Path]:
    """Return TFDS's manual folder, or None when it is missing or empty."""
    try:
        folder = dl_manager.manual_dir
    except AssertionError:
        # TFDS raises AssertionError for a missing or empty manual folder.
        return None
    return pathlib.Path(folder)


def search_folders(dl_manager, subfolder: str) -> List[pathlib.Path]:
    """Return the manual folder and its `subfolder`, the places a builder looks first."""
    folder = manual_folder(dl_manager)
    if folder is None:
        return []
    return [folder, folder / subfolder]


def missing_file_error(
    dl_manager, relative_path: str, folders: Sequence[pathlib.Path], instructions: str
) -> Exception:
    """Return the error for a file that is neither in the manual folder nor downloadable.

    With no manual folder at all, this is TFDS's own error for a missing manual folder,
    which names the folder and repeats the builder's instructions.
    """
    try:
        manual = dl_manager.manual_dir
    except AssertionError as error:
        return error
    searched = ", ".join(str(folder) for folder in folders) or str(manual)
    return FileNotFoundError(
        f"{relative_path} not found in the manual folder (searched {searched}). "
        f"Put the file there and run again.\n{instructions}"
    )


def missing_in_folders(folders: Sequence[pathlib.Path], names: Sequence[str]) -> str:
    """Return which of `names` each existing folder lacks, as "u.user in /data, ..."."""
    parts = []
    for folder in folders:
        if folder.is_dir():
            absent = [name for name in names if not (folder / name).is_file()]
            parts.append(f"{', '.join(absent)} in {folder}")
    return "; ".join(parts)


def download_missing(
    dl_manager, fetch: Callable[[str], str], url: str, missing: str, folders: Sequence[pathlib.Path]
) -> pathlib.Path:
    """Return `fetch(url)` as a path, first logging which files the manual folder lacks.

    `fetch` is `dl_manager.download` or `dl_manager.download_and_extract`, and `missing`
    names the missing files. With a manual folder, a warning names them before the
    download, and an error from `fetch` gets a note that names them. The error is
    re-raised with its type and message unchanged, and the note shows in its traceback.
    """
    note = None
    if manual_folder(dl_manager) is not None:
        searched = ", ".join(str(folder) for folder in folders)
        note = f"Missing from the manual folder: {missing} (searched {searched})."
        logging.warning("%s Downloading %s instead.", note, url)
    try:
        return pathlib.Path(fetch(url))
    except Exception as error:
        if note is not None:
            error.add_note(f"{note} Put the files there to build without downloading {url}.")
        raise
