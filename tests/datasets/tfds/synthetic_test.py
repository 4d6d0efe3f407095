"""Tests of the `mmoe_synthetic` and `sequential_synthetic` TFDS builders."""

import pathlib

import numpy as np
import pytest
import tensorflow_datasets as tfds

from mtl_layers.datasets.synthetic import mmoe, sequential
from mtl_layers.datasets.tfds import synthetic

# The synthetic builders read no files; TFDS's test case needs an existing folder.
FAKE_DIR = pathlib.Path(__file__).resolve().parent.parent / "tfds_fake_data"


class MmoeSyntheticTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = synthetic.MmoeSynthetic
    EXAMPLE_DIR = FAKE_DIR
    SPLITS = {"train": 40, "test": 10}
    BUILDER_CONFIG_NAMES_TO_TEST = [synthetic.mmoe_config(0.7, num_train=40, num_test=10, input_dim=8, seed=3)]


class SequentialSyntheticTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = synthetic.SequentialSynthetic
    EXAMPLE_DIR = FAKE_DIR
    SPLITS = {"train": 30, "test": 6}
    BUILDER_CONFIG_NAMES_TO_TEST = [synthetic.sequential_config(0.4, sparsity=0.5, num_train=30, num_test=6, seed=1)]


def test_mmoe_examples_match_generator(tmp_path):
    builder = tfds.builder(
        "mmoe_synthetic/correlation=-0.25,num_train=30,num_test=5,input_dim=6,seed=4", data_dir=str(tmp_path)
    )
    builder.download_and_prepare()
    assert builder.builder_config.name == "correlation_-0.25_train_30_test_5_dim_6_seed_4"
    (features, labels), _ = mmoe.mmoe_regression(35, -0.25, input_dim=6, seed=4)
    stored = builder.as_dataset(split="test", batch_size=-1)
    order = np.argsort(stored["labels"]["task_1"].numpy())
    expected_order = np.argsort(labels["task_1"][30:])
    np.testing.assert_array_equal(stored["inputs"].numpy()[order], features[30:][expected_order])
    np.testing.assert_array_equal(
        stored["labels"]["task_2"].numpy()[order], labels["task_2"][30:][expected_order]
    )


def test_sequential_examples_match_generator(tmp_path):
    builder = synthetic.SequentialSynthetic(
        data_dir=str(tmp_path), correlation=0.3, sparsity=0.9, num_train=8, num_test=4, seed=5
    )
    builder.download_and_prepare()
    data, _ = sequential.sequential_regression(
        12, 0.3, sparsity=[0.0, 0.0, 0.9, 0.9], num_sources=4, input_dim=16, max_length=20, seed=5
    )
    stored = builder.as_dataset(split="train", batch_size=-1)
    lengths = stored["inputs"]["mask"].numpy().sum(axis=1)
    order = np.lexsort((stored["labels"]["task_1"].numpy()[:, 0], lengths))
    expected_lengths = data["mask"][:8].sum(axis=1)
    expected_order = np.lexsort((data["labels"]["task_1"][:8, 0], expected_lengths))
    np.testing.assert_array_equal(stored["inputs"]["sequence"].numpy()[order], data["sequence"][:8][expected_order])
    np.testing.assert_array_equal(stored["inputs"]["mask"].numpy()[order], data["mask"][:8][expected_order])


def test_keyword_overrides_start_from_named_config():
    builder = synthetic.MmoeSynthetic(config="correlation_0.9", seed=7)
    assert builder.builder_config.correlation == 0.9
    assert builder.builder_config.seed == 7
    assert builder.builder_config.num_train == 20000


def test_predefined_configs_match_examples():
    names = [config.name for config in synthetic.MmoeSynthetic.BUILDER_CONFIGS]
    assert names == ["correlation_0.5", "correlation_0.9", "correlation_1.0"]
    assert [config.name for config in synthetic.SequentialSynthetic.BUILDER_CONFIGS] == [
        "correlation_0.2_sparsity_0.0",
        "correlation_0.2_sparsity_0.9",
        "correlation_0.9_sparsity_0.0",
        "correlation_0.9_sparsity_0.9",
    ]


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"correlation": 1.5}, "correlation"),
        ({"correlation": 0.5, "num_train": 0}, "num_train"),
        ({"correlation": 0.5, "seed": -1}, "seed"),
    ],
)
def test_invalid_parameters_raise(arguments, message):
    with pytest.raises(ValueError, match=message):
        synthetic.mmoe_config(**arguments)
