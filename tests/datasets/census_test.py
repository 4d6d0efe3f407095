"""Tests of the census loaders on the packaged Adult copy and the real KDD file."""

import gzip
import shutil
import urllib.error
import urllib.request

import numpy as np
import pytest

from mtl_layers.datasets import census, files


@pytest.fixture(scope="module")
def adult():
    return census.load_adult(task_group=1, seed=0)


def test_adult_sizes_and_tasks(adult):
    assert len(adult.train) + len(adult.validation) == 32561
    assert len(adult.validation) == 3256
    assert len(adult.test) == 16281
    assert [task.name for task in adult.tasks] == ["income", "never_married"]


def test_adult_test_labels_strip_trailing_period(adult):
    # adult.test has 3,846 ">50K." rows among 16,281.
    assert int(adult.test.labels["income"].sum()) == 3846


def test_adult_removes_marital_status_and_labels(adult):
    assert "marital_status" not in adult.train.features
    assert "income" not in adult.train.features
    assert len(adult.feature_specs) == 13


def test_adult_missing_values_are_a_category(adult):
    spec = {spec.name: spec for spec in adult.feature_specs}
    assert "?" in spec["workclass"].vocabulary
    assert spec["age"].kind == "numeric"
    np.testing.assert_allclose(spec["age"].mean, adult.train.features["age"].mean(), rtol=1e-5)


def test_adult_group2_removes_education():
    data = census.load_adult(task_group=2)
    assert [task.name for task in data.tasks] == ["college_education", "never_married"]
    assert "education" not in data.train.features
    assert "education_num" not in data.train.features
    # College level or above: some college and every degree above it.
    rate = data.test.labels["college_education"].mean()
    assert 0.4 < rate < 0.6


def test_adult_validation_split_depends_on_seed():
    first = census.load_adult(seed=0).validation.features["fnlwgt"]
    second = census.load_adult(seed=1).validation.features["fnlwgt"]
    again = census.load_adult(seed=0).validation.features["fnlwgt"]
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, second)


def test_adult_to_dataset_batches(adult):
    features, labels = next(iter(adult.test.to_dataset(32)))
    assert features["age"].shape == (32,)
    assert features["workclass"].dtype.name == "string"
    assert labels["income"].shape == (32,)


def test_adult_to_dataset_shuffles_every_iteration(adult):
    dataset = adult.validation.to_dataset(1000, shuffle=True, seed=0)

    first = np.concatenate([features["fnlwgt"].numpy() for features, _ in dataset])
    second = np.concatenate([features["fnlwgt"].numpy() for features, _ in dataset])

    assert int(dataset.cardinality()) == -(-len(adult.validation) // 1000)
    np.testing.assert_array_equal(np.sort(first), np.sort(adult.validation.features["fnlwgt"]))
    assert not np.array_equal(first, second)


def test_invalid_task_group():
    with pytest.raises(ValueError, match="`task_group` must be 1"):
        census.load_adult(task_group=3)


def test_adult_from_corrupt_folder_fails(tmp_path):
    with gzip.open(census.PACKAGED_ADULT_DIR / "adult.data.gz", "rb") as stream:
        content = stream.read()
    (tmp_path / "adult.data").write_bytes(content[:-1000])
    with pytest.raises(files.ChecksumError, match="SHA-256 mismatch"):
        census.load_adult(data_dir=tmp_path)


def test_census_kdd_test_file_split(data_file):
    path = data_file("census-income-kdd/census-income.test.gz")
    data = census.load_census_kdd(task_group=1, data_dir=path.parent, seed=0)
    assert len(data.train) + len(data.validation) + len(data.test) == 99762
    assert len(data.train) == 49881
    assert "50/25/25" in data.description
    assert "instance_weight" not in data.train.features
    assert "marital_stat" not in data.train.features
    assert len(data.feature_specs) == 39
    # 6,186 of the 99,762 rows earn more than 50,000.
    total_income = sum(split.labels["income"].sum() for split in (data.train, data.validation, data.test))
    assert int(total_income) == 6186


def test_census_kdd_group2(data_file):
    path = data_file("census-income-kdd/census-income.test.gz")
    data = census.load_census_kdd(task_group=2, data_dir=path.parent)
    assert [task.name for task in data.tasks] == ["college_education", "never_married"]
    assert "education" not in data.train.features


def test_census_kdd_missing_file_message(tmp_path, monkeypatch):
    monkeypatch.delenv("MTL_LAYERS_DATA_DIR", raising=False)
    monkeypatch.setenv("MTL_LAYERS_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match="census-income.test"):
        census.load_census_kdd(data_dir=tmp_path)


def test_census_kdd_wrong_column_count(tmp_path, data_file, monkeypatch):
    # A file with the pinned digest cannot be corrupted, so check the row parser directly.
    broken = tmp_path / "rows.csv"
    broken.write_text("1, 2, 3\n", encoding="ascii")
    with pytest.raises(ValueError, match="line 1: expected 42"):
        census._read_rows(broken, 42, skip_first_line=False)


def _adult_folder(folder, names=("adult.data.gz", "adult.test.gz")):
    """Copy the packaged Adult files named `names` into `folder` and return it."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(census.PACKAGED_ADULT_DIR / name, folder / name)
    return folder


def test_adult_reads_explicit_data_dir(tmp_path):
    data = census.load_adult(data_dir=_adult_folder(tmp_path / "uci-adult").parent)

    assert len(data.test) == 16281


@pytest.mark.parametrize(
    "layout, message",
    [
        ("missing", "does not exist"),
        ("file", "is not a folder"),
        ("empty", r"adult.data \(or adult.data.gz\) not found"),
        ("no_test_file", r"adult.test \(or adult.test.gz\) not found"),
        ("folder_named_adult_data", "exist but are not regular files"),
    ],
)  # fmt: skip
def test_adult_unusable_data_dir(tmp_path, layout, message):
    data_dir = tmp_path / "adult"
    if layout == "file":
        data_dir.write_text("not a folder")
    elif layout == "empty":
        data_dir.mkdir()
    elif layout == "no_test_file":
        _adult_folder(data_dir, names=("adult.data.gz",))
    elif layout == "folder_named_adult_data":
        (data_dir / "adult.data").mkdir(parents=True)

    with pytest.raises(FileNotFoundError, match=message):
        census.load_adult(data_dir=data_dir)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"task_group": True}, r"`task_group` must be 1 .*, as an integer"),
        ({"task_group": 1.0}, r"`task_group` must be 1 .*, as an integer"),
        ({"validation_fraction": "0.1"}, "`validation_fraction` must be a number in"),
        ({"validation_fraction": 1.0}, "`validation_fraction` must be a number in"),
        ({"seed": -1}, "`seed` must be an integer >= 0"),
        ({"seed": 1.5}, "`seed` must be an integer >= 0"),
        ({"tower_units": 8}, "`tower_units` must be a sequence"),
        ({"tower_units": (0,)}, "Every entry of `tower_units`"),
        ({"embedding_dim": 0}, "`embedding_dim` must be an integer >= 1"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("loader", [census.load_adult, census.load_census_kdd])
def test_invalid_loader_arguments(loader, kwargs, message, tmp_path):
    # The arguments are checked before any file is looked up, so an empty folder will do.
    with pytest.raises(ValueError, match=message):
        loader(data_dir=tmp_path, **kwargs)


def test_kdd_rejects_large_validation_fraction(tmp_path):
    with pytest.raises(ValueError, match="validation_fraction=5"):
        census.load_census_kdd(data_dir=tmp_path, validation_fraction=5)


def test_kdd_data_dir_ignores_default(data_root, tmp_path, monkeypatch):
    # The data folder variable points at a folder with census-income-kdd/, data_dir does not.
    monkeypatch.setenv(files.DATA_DIR_VARIABLE, str(data_root))
    monkeypatch.setenv(files.CACHE_DIR_VARIABLE, str(tmp_path / "cache"))
    empty = tmp_path / "empty"
    empty.mkdir()

    with pytest.raises(FileNotFoundError, match="Copy it there from"):
        census.load_census_kdd(data_dir=empty)


def test_kdd_data_dir_must_exist(tmp_path):
    with pytest.raises(FileNotFoundError, match="`data_dir` must be an existing folder"):
        census.load_census_kdd(data_dir=tmp_path / "missing")


def test_constant_column_gets_unit_variance():
    train = census.Split(
        features={"age": np.full(4, 30.0, np.float32), "job": np.array(["a", "b", "a", "b"], dtype=object)},
        labels={"income": np.zeros(4, np.float32)},
    )

    specs = {spec.name: spec for spec in census._feature_specs(train, ("age",), embedding_dim=2)}

    assert specs["age"].variance == 1.0
    assert specs["age"].mean == 30.0


def test_adult_broken_link_reported(tmp_path):
    (tmp_path / "adult.data").symlink_to(tmp_path / "gone" / "adult.data")

    with pytest.raises(FileNotFoundError, match=r"broken symbolic links.*adult.data -> .*gone/adult.data"):
        census.load_adult(data_dir=tmp_path)


def test_adult_download_error_names_url(tmp_path, monkeypatch):
    def not_found(url, timeout):
        raise urllib.error.HTTPError(url, 404, "File not found", {}, None)

    monkeypatch.setattr(urllib.request, "urlopen", not_found)
    monkeypatch.setattr(census, "ADULT_URL", "http://127.0.0.1:9/adult/")
    monkeypatch.setenv(files.CACHE_DIR_VARIABLE, str(tmp_path / "cache"))
    (tmp_path / "data").mkdir()

    with pytest.raises(files.DownloadError, match=r"http://127.0.0.1:9/adult/adult.data to .*cache/uci-adult/adult.data: HTTP Error 404"):
        census.load_adult(data_dir=tmp_path / "data", download=True)


def test_kdd_data_dir_variable_must_exist(tmp_path, monkeypatch):
    # The cache contains a file, but a mistyped variable must not fall back to it.
    monkeypatch.setenv(files.DATA_DIR_VARIABLE, str(tmp_path / "mistyped"))
    monkeypatch.setenv(files.CACHE_DIR_VARIABLE, str(tmp_path / "cache"))
    (tmp_path / "cache" / "census-income-kdd").mkdir(parents=True)
    (tmp_path / "cache" / "census-income-kdd" / "census-income.test").write_text("")

    with pytest.raises(FileNotFoundError, match="MTL_LAYERS_DATA_DIR='.*mistyped', which does not exist"):
        census.load_census_kdd()
