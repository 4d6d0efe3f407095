"""UCI census data for multi-task learning: Adult and Census-Income (KDD).

Two data sets from the US Census Bureau's surveys, as used by the Multi-gate
Mixture-of-Experts paper (Ma et al., KDD 2018) and its re-implementations:

* UCI Adult (Becker and Kohavi, 1996; CC BY 4.0), the 1994 census extract with 48,842
  people. Its files ship inside this package (`mtl_layers/datasets/data/adult`), so no
  download is needed.
* UCI Census-Income (KDD) (Lane and Kohavi, 2000; CC BY 4.0), 299,285 people from the
  1994 and 1995 Current Population Surveys, 40 features. Its files are read from a folder
  or downloaded from the UCI repository.

Tasks, as in the MMoE paper's census experiments:
* task group 1: `income` (income above 50K) and `never_married` (marital status
  "never married"); the marital status column is removed from the inputs.
* task group 2: `college_education` (education at college level or above: some college,
  an associate, bachelor's, master's, professional school or doctoral degree) and
  `never_married`; the marital status and education columns are removed from the inputs.

Missing values (`?`) are kept as their own category. The KDD instance weight is not a
feature and is dropped. Adult's test labels end with a `.`, which is removed.
"""

import csv
import dataclasses
import numbers
import pathlib
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from absl import logging

from mtl_layers.datasets import batching, files
from mtl_layers.models.features import FeatureSpec
from mtl_layers.tasks import TaskSpec

PACKAGED_ADULT_DIR = pathlib.Path(__file__).resolve().parent / "data" / "adult"

ADULT_COLUMNS = (
    "age", "workclass", "fnlwgt", "education", "education_num", "marital_status",
    "occupation", "relationship", "race", "sex", "capital_gain", "capital_loss",
    "hours_per_week", "native_country", "income",
)  # fmt: skip
ADULT_NUMERIC = ("age", "fnlwgt", "education_num", "capital_gain", "capital_loss", "hours_per_week")
ADULT_URL = "https://archive.ics.uci.edu/ml/machine-learning-databases/adult/"
# Digests of the uncompressed official files, as published for the UCI copies.
ADULT_SHA256 = {
    "adult.data": "5b00264637dbfec36bdeaab5676b0b309ff9eb788d63554ca0a249491c86603d",
    "adult.test": "a2a9044bc167a35b2361efbabec64e89d69ce82d9790d2980119aac5fd7e9c05",
}

# Column names of census-income.names, in file order, in snake_case for TF signatures.
KDD_COLUMNS = (
    "age", "class_of_worker", "detailed_industry_recode", "detailed_occupation_recode",
    "education", "wage_per_hour", "enroll_in_edu_inst_last_wk", "marital_stat",
    "major_industry_code", "major_occupation_code", "race", "hispanic_origin", "sex",
    "member_of_a_labor_union", "reason_for_unemployment", "full_or_part_time_employment_stat",
    "capital_gains", "capital_losses", "dividends_from_stocks", "tax_filer_stat",
    "region_of_previous_residence", "state_of_previous_residence",
    "detailed_household_and_family_stat", "detailed_household_summary_in_household",
    "instance_weight", "migration_code_change_in_msa", "migration_code_change_in_reg",
    "migration_code_move_within_reg", "live_in_this_house_1_year_ago",
    "migration_prev_res_in_sunbelt", "num_persons_worked_for_employer",
    "family_members_under_18", "country_of_birth_father", "country_of_birth_mother",
    "country_of_birth_self", "citizenship", "own_business_or_self_employed",
    "fill_inc_questionnaire_for_veterans_admin", "veterans_benefits", "weeks_worked_in_year",
    "year", "income",
)  # fmt: skip
# Continuous attributes according to census-income.names (instance weight excluded).
KDD_NUMERIC = (
    "age", "wage_per_hour", "capital_gains", "capital_losses", "dividends_from_stocks",
    "num_persons_worked_for_employer", "weeks_worked_in_year",
)  # fmt: skip
KDD_URL = "https://archive.ics.uci.edu/ml/machine-learning-databases/census-income-mld/"
# Digests of the uncompressed official files (199,523 and 99,762 rows).
KDD_SHA256 = {
    "census-income.data": "3676a81db7d3528f3f8b9f3c699d0f0aa28db45e6e994fa0b8ed38327539ee86",
    "census-income.test": "98402b1ab879573d0a7f38a699a40258080e25e33d3401e7bf9c96d3fa0fab8c",
}

ADULT_COLLEGE = {"Some-college", "Assoc-acdm", "Assoc-voc", "Bachelors", "Masters", "Prof-school", "Doctorate"}
KDD_COLLEGE = {
    "Some college but no degree", "Associates degree-academic program",
    "Associates degree-occup /vocational", "Bachelors degree(BA AB BS)",
    "Masters degree(MA MS MEng MEd MSW MBA)", "Prof school degree (MD DDS DVM LLB JD)",
    "Doctorate degree(PhD EdD)",
}  # fmt: skip

TASK_GROUPS = (1, 2)


@dataclasses.dataclass
class Split:
    """One split: raw feature columns and task labels as NumPy arrays."""

    features: Dict[str, np.ndarray]
    labels: Dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(next(iter(self.labels.values())))

    def to_dataset(self, batch_size: int, shuffle: bool = False, seed: Optional[int] = None):
        """Return a batched `tf.data.Dataset` of `(features, labels)` dicts, one epoch.

        With `shuffle`, every iteration visits the examples in a new order. The batches
        are gathered with a few ops per epoch (`in_memory_batches`), not example by example.
        """
        return batching.in_memory_batches(
            self.features, self.labels, batch_size=batch_size, shuffle=shuffle, seed=seed
        )


@dataclasses.dataclass
class CensusData:
    """A census data set split for training, with its feature and task specifications.

    `feature_specs` hold vocabularies, means and variances computed on `train` only.
    """

    name: str
    train: Split
    validation: Split
    test: Split
    feature_specs: List[FeatureSpec]
    tasks: List[TaskSpec]
    description: str


def _read_rows(path: pathlib.Path, num_columns: int, skip_first_line: bool) -> List[List[str]]:
    rows = []
    with files.open_text(path, encoding="ascii") as stream:
        reader = csv.reader(stream, skipinitialspace=True)
        for line_number, row in enumerate(reader, start=1):
            if skip_first_line and line_number == 1:
                continue
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != num_columns:
                raise ValueError(
                    f"{path}, line {line_number}: expected {num_columns} comma-separated "
                    f"fields, found {len(row)}. The file is corrupt or not the official file."
                )
            rows.append([value.strip() for value in row])
    return rows


def _columns(rows: List[List[str]], names: Sequence[str]) -> Dict[str, np.ndarray]:
    table = np.array(rows, dtype=object)
    return {name: table[:, index] for index, name in enumerate(names)}


def _numeric(values: np.ndarray, name: str, path: pathlib.Path) -> np.ndarray:
    try:
        result = values.astype(np.float32)
    except ValueError as error:
        raise ValueError(
            f"{path}: column {name!r} contains an invalid (non-numeric) value: {error}. "
            "The file is corrupt or not the official file."
        ) from error
    if not np.all(np.isfinite(result)):
        raise ValueError(
            f"{path}: column {name!r} contains NaN or infinite values. The file is corrupt "
            "or not the official file."
        )
    return result


def _make_split(columns, numeric, labels, removed, path) -> Split:
    features = {}
    for name, values in columns.items():
        if name in removed:
            continue
        if name in numeric:
            features[name] = _numeric(values, name, path)
        else:
            features[name] = values.astype(str).astype(object)
    return Split(features=features, labels=labels)


def _task_labels(columns, dataset: str, task_group: int) -> Dict[str, np.ndarray]:
    if dataset == "adult":
        income = np.isin(columns["income"], [">50K", ">50K."])
        never_married = columns["marital_status"] == "Never-married"
        college = np.isin(columns["education"], list(ADULT_COLLEGE))
    else:
        income = columns["income"] == "50000+."
        never_married = columns["marital_stat"] == "Never married"
        college = np.isin(columns["education"], list(KDD_COLLEGE))
    if task_group == 1:
        labels = {"income": income, "never_married": never_married}
    else:
        labels = {"college_education": college, "never_married": never_married}
    return {name: values.astype(np.float32) for name, values in labels.items()}


def _removed_columns(dataset: str, task_group: int) -> set:
    if dataset == "adult":
        removed = {"income", "marital_status"}
        if task_group == 2:
            removed |= {"education", "education_num"}
    else:
        removed = {"income", "marital_stat", "instance_weight"}
        if task_group == 2:
            removed |= {"education"}
    return removed


def _feature_specs(train: Split, numeric: Sequence[str], embedding_dim: int) -> List[FeatureSpec]:
    specs = []
    for name, values in train.features.items():
        if name in numeric:
            variance = float(np.var(values))
            # A column that is constant in training (a small subset, for example) gets
            # variance 1, because FeatureSpec rejects 0, and scaling by 1 keeps the
            # centred values finite and small.
            specs.append(
                FeatureSpec(
                    name,
                    "numeric",
                    mean=float(np.mean(values)),
                    variance=variance if variance > 0 else 1.0,
                )
            )
        else:
            specs.append(
                FeatureSpec(
                    name,
                    "categorical",
                    vocabulary=tuple(sorted(set(values.tolist()))),
                    embedding_dim=embedding_dim,
                )
            )
    return specs


def _task_specs(task_group: int, tower_units: Tuple[int, ...]) -> List[TaskSpec]:
    first = "income" if task_group == 1 else "college_education"
    return [
        TaskSpec(first, kind="binary", tower_units=tower_units),
        TaskSpec("never_married", kind="binary", tower_units=tower_units),
    ]


def _check_task_group(task_group: int) -> None:
    if (
        isinstance(task_group, bool)
        or not isinstance(task_group, numbers.Integral)
        or task_group not in TASK_GROUPS
    ):
        raise ValueError(
            f"`task_group` must be 1 (income, never married) or 2 (college education, never "
            f"married), as an integer. Received: task_group={task_group!r}"
        )


def _check_arguments(task_group, validation_fraction, seed, embedding_dim, tower_units) -> None:
    """Validate the loader arguments before any file is read."""
    _check_task_group(task_group)
    if (
        isinstance(validation_fraction, bool)
        or not isinstance(validation_fraction, numbers.Real)
        or not 0.0 <= validation_fraction < 1.0
    ):
        raise ValueError(
            "`validation_fraction` must be a number in [0, 1). Received: "
            f"validation_fraction={validation_fraction!r}"
        )
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"`seed` must be an integer >= 0. Received: seed={seed!r}")
    if (
        isinstance(embedding_dim, bool)
        or not isinstance(embedding_dim, numbers.Integral)
        or embedding_dim < 1
    ):
        raise ValueError(
            f"`embedding_dim` must be an integer >= 1. Received: embedding_dim={embedding_dim!r}"
        )
    if isinstance(tower_units, (str, bytes)) or not isinstance(tower_units, Sequence):
        raise ValueError(
            "`tower_units` must be a sequence of integers >= 1, for example (8,). "
            f"Received: tower_units={tower_units!r}"
        )
    # TaskSpec checks every entry.
    _task_specs(task_group, tuple(tower_units))


def _subset(columns: Dict[str, np.ndarray], indices: np.ndarray) -> Dict[str, np.ndarray]:
    return {name: values[indices] for name, values in columns.items()}


def _build(
    name, dataset, train_columns, validation_columns, test_columns, numeric, task_group,
    embedding_dim, tower_units, paths, description,
) -> CensusData:  # fmt: skip
    removed = _removed_columns(dataset, task_group)
    splits = []
    for columns in (train_columns, validation_columns, test_columns):
        labels = _task_labels(columns, dataset, task_group)
        splits.append(_make_split(columns, numeric, labels, removed, paths))
    train, validation, test = splits
    return CensusData(
        name=name,
        train=train,
        validation=validation,
        test=test,
        feature_specs=_feature_specs(train, numeric, embedding_dim),
        tasks=_task_specs(task_group, tower_units),
        description=description,
    )


def _adult_folders(data_dir: Optional[pathlib.Path]) -> List[pathlib.Path]:
    """Return the folders to search: only `data_dir` and its `uci-adult/` when it is given."""
    if data_dir is None:
        return [PACKAGED_ADULT_DIR]
    folder = files.check_data_dir(
        data_dir,
        "adult.data and adult.test (plain or .gz)",
        f"Download them from {ADULT_URL}, or omit `data_dir` to use the packaged copy.",
    )
    return [folder, folder / "uci-adult"]


def _adult_file(name: str, folders: List[pathlib.Path], download: bool) -> pathlib.Path:
    names = [name, name + ".gz"]
    path = files.find_file(folders, names)
    if path is None:
        searched = [str(folder) for folder in folders]
        if not download:
            raise FileNotFoundError(
                f"{name} (or {name}.gz) not found in `data_dir` (searched {searched})."
                f"{files.not_regular_files(folders, names)} Copy it there from {ADULT_URL}, "
                "pass `download=True` to download it into the cache, or omit `data_dir` to "
                "use the packaged copy."
            )
        logging.warning("%s not found in %s; using download=True to fetch it into the cache.", name, searched)
        path = files.download(ADULT_URL + name, files.cache_dir() / "uci-adult" / name, ADULT_SHA256[name])
    files.verify_sha256(path, ADULT_SHA256[name])
    return path


def load_adult(
    task_group: int = 1,
    validation_fraction: float = 0.1,
    seed: int = 0,
    data_dir: Optional[pathlib.Path] = None,
    download: bool = False,
    embedding_dim: int = 4,
    tower_units: Tuple[int, ...] = (8,),
) -> CensusData:
    """Load UCI Adult with the official train/test split and a validation hold-out.

    Args:
        task_group: 1 (income, never married) or 2 (college education, never married).
        validation_fraction: Fraction of `adult.data` held out for validation, drawn with
            `seed`.
        seed: Seed of the validation draw, an integer >= 0.
        data_dir: Optional folder with `adult.data` and `adult.test` (plain or `.gz`),
            directly or in its `uci-adult/` subfolder. When it is given, only it is
            searched. When it is None, the packaged copy is used.
        download: Download files missing from `data_dir` from the UCI repository into
            the cache (`$MTL_LAYERS_CACHE_DIR/uci-adult`).
        embedding_dim: Embedding size of the categorical features.
        tower_units: Tower sizes of the returned task specifications.

    Returns:
        A `CensusData` with 32,561 - validation rows for training and 16,281 test rows.

    Raises:
        ValueError: An argument is invalid.
        FileNotFoundError: `data_dir` is not a folder, or lacks a file and `download`
            is False.
        mtl_layers.datasets.files.ChecksumError: A file differs from the official one.
    """
    _check_arguments(task_group, validation_fraction, seed, embedding_dim, tower_units)
    folders = _adult_folders(data_dir)
    train_path = _adult_file("adult.data", folders, download)
    test_path = _adult_file("adult.test", folders, download)
    train_rows = _read_rows(train_path, len(ADULT_COLUMNS), skip_first_line=False)
    test_rows = _read_rows(test_path, len(ADULT_COLUMNS), skip_first_line=True)
    all_train = _columns(train_rows, ADULT_COLUMNS)
    test = _columns(test_rows, ADULT_COLUMNS)
    test["income"] = np.array([label.rstrip(".") for label in test["income"]], dtype=object)

    order = np.random.default_rng(seed).permutation(len(train_rows))
    num_validation = int(round(validation_fraction * len(train_rows)))
    validation = _subset(all_train, order[:num_validation])
    train = _subset(all_train, order[num_validation:])
    return _build(
        "adult", "adult", train, validation, test, ADULT_NUMERIC, task_group, embedding_dim,
        tower_units, train_path,
        f"UCI Adult, official split; {validation_fraction:.0%} of adult.data held out for "
        f"validation (seed {seed}).",
    )  # fmt: skip


def _kdd_folders(data_dir: Optional[pathlib.Path]) -> List[pathlib.Path]:
    """Return the folders to search: only `data_dir` (and a subfolder) when it is given."""
    if data_dir is not None:
        root = files.check_data_dir(
            data_dir,
            "census-income.test (plain or .gz) and optionally census-income.data",
            f"Download them from {KDD_URL}, or pass `download=True` without `data_dir`.",
        )
        return [root, root / "census-income-kdd"]
    folders = []
    default = files.default_data_dir()
    if default is not None:
        folders += [default, default / "census-income-kdd"]
    return folders + [files.cache_dir() / "census-income-kdd"]


def load_census_kdd(
    task_group: int = 1,
    data_dir: Optional[pathlib.Path] = None,
    download: bool = False,
    seed: int = 0,
    validation_fraction: float = 0.1,
    embedding_dim: int = 4,
    tower_units: Tuple[int, ...] = (8,),
) -> CensusData:
    """Load UCI Census-Income (KDD) for the MMoE paper's task groups.

    Files are looked up as `census-income.data[.gz]` and `census-income.test[.gz]` in
    `data_dir` and `data_dir/census-income-kdd` only, when `data_dir` is given. Without
    it, they are looked up in the same two under `MTL_LAYERS_DATA_DIR`, then in the
    download cache. With both files, the official split is used and
    `validation_fraction` of the training file is held out. With only the test file
    (99,762 rows), it is split 50/25/25 into train, validation and test with `seed`.

    Args:
        task_group: 1 (income, never married) or 2 (college education, never married).
        data_dir: Folder with the files; see above for the other places searched.
        download: Download missing files from the UCI repository into the cache.
        seed: Seed of the random splits, an integer >= 0.
        validation_fraction: Hold-out fraction of the training file (official split
            only), in [0, 1).
        embedding_dim: Embedding size of the categorical features.
        tower_units: Tower sizes of the returned task specifications.

    Raises:
        ValueError: An argument is invalid.
        FileNotFoundError: `data_dir` is not a folder, or census-income.test is not
            found and `download` is False.
        mtl_layers.datasets.files.ChecksumError: A file differs from the official one.
    """
    _check_arguments(task_group, validation_fraction, seed, embedding_dim, tower_units)
    folders = _kdd_folders(data_dir)
    paths = {}
    for name in ("census-income.data", "census-income.test"):
        path = files.find_file(folders, [name, name + ".gz"])
        if path is None and download:
            if data_dir is not None:
                logging.warning(
                    "%s not found in %s; using download=True to fetch it into the cache.",
                    name,
                    [str(folder) for folder in folders],
                )
            path = files.download(
                KDD_URL + name + ".gz",
                files.cache_dir() / "census-income-kdd" / (name + ".gz"),
                KDD_SHA256[name],
            )
        if path is not None:
            files.verify_sha256(path, KDD_SHA256[name])
            paths[name] = path
    if "census-income.test" not in paths:
        names = ["census-income.test", "census-income.test.gz"]
        if data_dir is not None:
            fix = f"Copy it there from {KDD_URL}, or pass `download=True` to download it into the cache."
        else:
            fix = "Pass its folder as `data_dir`, set MTL_LAYERS_DATA_DIR, or use `download=True`."
        raise FileNotFoundError(
            "census-income.test(.gz) not found in any of "
            f"{[str(folder) for folder in folders]}.{files.not_regular_files(folders, names)} {fix}"
        )

    rng = np.random.default_rng(seed)
    test_rows = _read_rows(paths["census-income.test"], len(KDD_COLUMNS), skip_first_line=False)
    test_columns = _columns(test_rows, KDD_COLUMNS)
    if "census-income.data" in paths:
        train_rows = _read_rows(paths["census-income.data"], len(KDD_COLUMNS), skip_first_line=False)
        all_train = _columns(train_rows, KDD_COLUMNS)
        order = rng.permutation(len(train_rows))
        num_validation = int(round(validation_fraction * len(train_rows)))
        validation = _subset(all_train, order[:num_validation])
        train = _subset(all_train, order[num_validation:])
        test = test_columns
        description = (
            "UCI Census-Income (KDD), official train/test files; "
            f"{validation_fraction:.0%} of the training file held out (seed {seed})."
        )
    else:
        order = rng.permutation(len(test_rows))
        half, three_quarters = len(order) // 2, (3 * len(order)) // 4
        train = _subset(test_columns, order[:half])
        validation = _subset(test_columns, order[half:three_quarters])
        test = _subset(test_columns, order[three_quarters:])
        description = (
            "UCI Census-Income (KDD), only the official test file (99,762 rows), split "
            f"50/25/25 into train/validation/test (seed {seed})."
        )
    return _build(
        "census_kdd", "kdd", train, validation, test, KDD_NUMERIC, task_group, embedding_dim,
        tower_units, paths["census-income.test"], description,
    )  # fmt: skip
