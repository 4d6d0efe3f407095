"""Features and examples shared by the UCI Adult and Census-Income (KDD) builders.

Rows are parsed and labelled by `mtl_layers.datasets.census`, so a builder's examples
contain the same values as the arrays of `census.load_adult` and `census.load_census_kdd`.
Numeric columns are float32, the other columns strings (`?` marks a missing value), and
the two task labels of the task group float32 0/1.
"""

import dataclasses
import pathlib
from typing import Dict, Iterator, Sequence, Tuple

import numpy as np
import tensorflow_datasets as tfds

from mtl_layers.datasets import census

TASK_LABEL_DOCS = {
    "income": "1.0 when the income is above 50,000 USD, else 0.0.",
    "never_married": "1.0 when the marital status is never married, else 0.0.",
    "college_education": (
        "1.0 for education at college level or above (some college, an associate, "
        "bachelor's, master's, professional school or doctoral degree), else 0.0."
    ),
}


@dataclasses.dataclass(eq=False)
class CensusConfig(tfds.core.BuilderConfig):
    """Configuration of a census builder: the MMoE paper's task group, 1 or 2."""

    task_group: int = 1


def task_group_configs() -> list:
    """Return the configs `group1` (income, never married) and `group2`."""
    return [
        CensusConfig(
            name="group1",
            description="Tasks: income above 50K and never married; the marital status is not an input.",
            task_group=1,
        ),
        CensusConfig(
            name="group2",
            description=(
                "Tasks: college education and never married; the marital status and "
                "education columns are not inputs."
            ),
            task_group=2,
        ),
    ]


def input_columns(dataset: str, task_group: int) -> Tuple[str, ...]:
    """Return the input columns of `dataset` ("adult" or "kdd") for a task group, in file order."""
    columns = census.ADULT_COLUMNS if dataset == "adult" else census.KDD_COLUMNS
    removed = census._removed_columns(dataset, task_group)
    return tuple(name for name in columns if name not in removed)


def features(dataset: str, task_group: int) -> tfds.features.FeaturesDict:
    """Return the typed features: `inputs` (one entry per column) and `labels`."""
    numeric = census.ADULT_NUMERIC if dataset == "adult" else census.KDD_NUMERIC
    inputs = {}
    for name in input_columns(dataset, task_group):
        if name in numeric:
            inputs[name] = tfds.features.Scalar(np.float32, doc=f"Continuous attribute `{name}`.")
        else:
            inputs[name] = tfds.features.Text(
                doc=f"Categorical attribute `{name}` as written in the file; `?` marks a missing value."
            )
    task_names = ("income", "never_married") if task_group == 1 else ("college_education", "never_married")
    labels = {
        name: tfds.features.Scalar(np.float32, doc=TASK_LABEL_DOCS[name]) for name in task_names
    }
    return tfds.features.FeaturesDict(
        {
            "inputs": tfds.features.FeaturesDict(inputs),
            "labels": tfds.features.FeaturesDict(labels),
        }
    )


def generate_examples(
    path: pathlib.Path,
    dataset: str,
    task_group: int,
    column_names: Sequence[str],
    numeric: Sequence[str],
    skip_first_line: bool,
) -> Iterator[Tuple[str, Dict]]:
    """Yield `(key, example)` for every row of one census file.

    The key is the file name and the row's position, so keys are unique and stable.
    """
    rows = census._read_rows(path, len(column_names), skip_first_line=skip_first_line)
    columns = census._columns(rows, column_names)
    labels = census._task_labels(columns, dataset, task_group)
    split = census._make_split(
        columns, numeric, labels, census._removed_columns(dataset, task_group), path
    )
    for index in range(len(split)):
        example = {
            "inputs": {name: values[index] for name, values in split.features.items()},
            "labels": {name: values[index] for name, values in split.labels.items()},
        }
        yield f"{path.name}:{index}", example
