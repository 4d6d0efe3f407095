"""Shared test settings: the real-data folder and quiet TensorFlow logs.

Real data sets are found through one setting, the environment variable
`MTL_LAYERS_DATA_DIR`. When it is unset, `../shared/data` beside the repository is used
if it exists. Without either, tests that need real data are skipped with the reason,
unless `MTL_LAYERS_REQUIRE_DATA=1` is set (as `.ci/run` does), which makes missing data a
test failure.
"""

import importlib.util
import os
import pathlib
import subprocess
import sys

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


def _load_module(name: str, path: pathlib.Path):
    """Import the file at `path` as a module called `name` and return it.

    The tests run with `--import-mode=importlib`, so their folders are not packages on
    `sys.path`, and a helper file that several test files use is imported by its path.
    """
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def load_test_module():
    """Return a function `(name, path) -> module` that imports a test helper file."""
    return _load_module


@pytest.fixture(scope="session")
def scale_harness():
    """Return `tests/scale/distributed_test.py` as a module, for its child-process helpers.

    Its `_free_ports`, `_child_environment`, `_stop` and `run_multi_worker` start and stop
    TensorFlow processes on 127.0.0.1.
    """
    return _load_module("scale_distributed_harness", REPO_ROOT / "tests" / "scale" / "distributed_test.py")


@pytest.fixture(scope="session")
def distributed_worker():
    """Return `tests/scale/distributed_worker.py`, the child process of the distributed tests."""
    return _load_module("distributed_worker", REPO_ROOT / "tests" / "scale" / "distributed_worker.py")


@pytest.fixture(scope="session")
def run_script():
    """Return a function that runs a repository script with arguments in a new process.

    The function takes the script's path relative to the repository root and its
    arguments, and returns the `subprocess.CompletedProcess` with text output.
    """

    def run(relative_path: str, *arguments: str, timeout: float = 300):
        return subprocess.run(
            [sys.executable, str(REPO_ROOT / relative_path), *arguments],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
            timeout=timeout,
        )

    return run
