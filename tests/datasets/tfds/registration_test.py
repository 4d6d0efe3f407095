"""Tests that importing `mtl_layers.datasets` registers the TFDS builders."""

import importlib
import sys
from unittest import mock

import pytest
import tensorflow_datasets as tfds

import mtl_layers.datasets
from mtl_layers.datasets import tfds as mtl_tfds


def test_import_registers_every_builder():
    registered = set(tfds.list_builders(with_community_datasets=False))
    for name in mtl_tfds.BUILDER_NAMES:
        assert name in registered


@pytest.mark.parametrize(
    "name, config",
    [
        ("uci_adult/group2", "group2"),
        ("census_income_kdd/group1_test_file", "group1_test_file"),
        ("mmoe_synthetic/correlation_1.0", "correlation_1.0"),
        ("sequential_synthetic/correlation_0.2_sparsity_0.9", "correlation_0.2_sparsity_0.9"),
    ],
)
def test_builder_by_name_and_config(tmp_path, name, config):
    builder = tfds.builder(name, data_dir=str(tmp_path))
    assert builder.builder_config.name == config
    assert builder.info.supervised_keys == ("inputs", "labels")
    assert builder.info.citation


def test_builders_without_tfds_raise_import_error():
    # Import the package again as if tensorflow_datasets were not installed.
    with mock.patch.dict(sys.modules, {"tensorflow_datasets": None}), mock.patch.object(
        mtl_layers.datasets, "tfds", mtl_tfds
    ):
        del sys.modules["mtl_layers.datasets.tfds"]
        without_tfds = importlib.import_module("mtl_layers.datasets.tfds")
        assert without_tfds.BUILDER_NAMES == mtl_tfds.BUILDER_NAMES
        with pytest.raises(ImportError, match=r"pip install mtl_layers\[datasets\]"):
            without_tfds.UciAdult
    assert sys.modules["mtl_layers.datasets.tfds"] is mtl_tfds
    assert mtl_layers.datasets.tfds is mtl_tfds
