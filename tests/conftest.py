"""Shared test settings: the real-data folder and quiet TensorFlow logs.

Real data sets are found through one setting, the environment variable
`MTL_LAYERS_DATA_DIR`. When it is unset, `../shared/data` beside the repository is used
if it exists. Without either, tests that need real data are skipped with the reason,
unless `MTL_LAYERS_REQUIRE_DATA=1` is set (as `.ci/run` does), which makes missing data a
test failure.
"""

import os
import pathlib

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def _data_root():
    configured = os.environ.get("MTL_LAYERS_DATA_DIR")
    if configured:
        return pathlib.Path(configured)
    default = REPO_ROOT.parent / "shared" / "data"
    return default if default.is_dir() else None


@pytest.fixture(scope="session")
def data_root() -> pathlib.Path:
    """Return the folder of real data sets, or skip (fail under CI) when it is missing."""
    root = _data_root()
    if root is None or not root.is_dir():
        message = (
            "Real data not found: set MTL_LAYERS_DATA_DIR to a folder with "
            "uci-adult/, census-income-kdd/, movielens-100k/ and glue/ "
            f"(looked at {os.environ.get('MTL_LAYERS_DATA_DIR') or REPO_ROOT.parent / 'shared' / 'data'})."
        )
        if os.environ.get("MTL_LAYERS_REQUIRE_DATA") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return root


@pytest.fixture(scope="session")
def data_file(data_root):
    """Return a function that maps a path under the data folder to an existing file.

    The function skips the test (fails it under CI) when the file is missing.
    """

    def resolve(relative_path: str) -> pathlib.Path:
        path = data_root / relative_path
        if not path.exists():
            message = f"Real data file not found: {path}."
            if os.environ.get("MTL_LAYERS_REQUIRE_DATA") == "1":
                pytest.fail(message)
            pytest.skip(message)
        return path

    return resolve
