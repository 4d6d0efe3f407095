"""TFDS builders for the synthetic generators: `mmoe_synthetic` and `sequential_synthetic`.

The generating parameters are the config. Pick a predefined config by name, or pass
parameters as builder keyword arguments, in the data set name or in `builder_kwargs`:

    tfds.load("mmoe_synthetic/correlation_0.9", split="train", as_supervised=True)
    tfds.load("mmoe_synthetic/correlation=0.3,num_train=5000,seed=2", split="test")
    tfds.load("sequential_synthetic", builder_kwargs={"correlation": 0.5, "sparsity": 0.8})

Keyword arguments start from the default config (or from `config`, when given) and
replace the parameters they name. The resulting config is named after all parameters,
for example `correlation_0.3_train_5000_test_5000_dim_100_seed_2`, so each parameter set
is prepared once and kept in its own folder. Both splits come from one call of the
generator with `num_train + num_test` examples, the first `num_train` being `train`.
"""

import dataclasses
import numbers

import numpy as np
import tensorflow_datasets as tfds

from mtl_layers.datasets.synthetic import mmoe, sequential
from mtl_layers.datasets.tfds import _sources

SEQUENTIAL_CITATION = """\
@inproceedings{qin2020mose,
  title={Multitask Mixture of Sequential Experts for User Activity Streams},
  author={Qin, Zhen and Cheng, Yicheng and Zhao, Zhe and Chen, Zhe and Metzler, Donald and Qin, Jingzheng},
  booktitle={Proceedings of the 26th ACM SIGKDD International Conference on Knowledge Discovery \\& Data Mining},
  year={2020}
}

""" + _sources.MMOE_CITATION


def _check_count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{name}` must be an integer >= 1. Received: {name}={value!r}")
    return int(value)


@dataclasses.dataclass(eq=False)
class MmoeSyntheticConfig(tfds.core.BuilderConfig):
    """Parameters of `mmoe.mmoe_regression` and the split sizes.

    Attributes:
        correlation: Cosine similarity of the two task weight vectors, in [-1, 1].
        num_train: Examples in the `train` split.
        num_test: Examples in the `test` split.
        input_dim: Input dimension.
        seed: Seed of every random draw.
    """

    correlation: float = 0.5
    num_train: int = 20000
    num_test: int = 5000
    input_dim: int = 100
    seed: int = 0


def mmoe_config(
    correlation: float, num_train: int = 20000, num_test: int = 5000, input_dim: int = 100, seed: int = 0
) -> MmoeSyntheticConfig:
    """Return an `mmoe_synthetic` config named after its parameters."""
    num_train = _check_count("num_train", num_train)
    num_test = _check_count("num_test", num_test)
    # The generator checks the other parameters; check them here so a bad value fails
    # before anything is written.
    mmoe._check_arguments(num_train + num_test, correlation, input_dim, 10, 1.0, 0.1, seed)
    return MmoeSyntheticConfig(
        name=f"correlation_{float(correlation)}_train_{num_train}_test_{num_test}_dim_{input_dim}_seed_{seed}",
        description=(
            f"Task correlation {float(correlation)}, {num_train} train and {num_test} test examples, "
            f"input dimension {input_dim}, seed {seed}."
        ),
        correlation=float(correlation),
        num_train=num_train,
        num_test=num_test,
        input_dim=int(input_dim),
        seed=int(seed),
    )


@dataclasses.dataclass(eq=False)
class SequentialSyntheticConfig(tfds.core.BuilderConfig):
    """Parameters of `sequential.sequential_regression` and the split sizes.

    There are 4 input sources of 4 dimensions each. The first two are always observed,
    and the last two are missing at a step with probability `sparsity`.

    Attributes:
        correlation: Cosine similarity of the two task weight vectors, in [-1, 1].
        sparsity: Probability in [0, 1) that each of the two sparse sources is missing.
        num_train: Sequences in the `train` split.
        num_test: Sequences in the `test` split.
        seed: Seed of every random draw.
    """

    correlation: float = 0.9
    sparsity: float = 0.0
    num_train: int = 2400
    num_test: int = 600
    seed: int = 0


SEQUENTIAL_INPUT_DIM = 16
SEQUENTIAL_NUM_SOURCES = 4
SEQUENTIAL_MAX_LENGTH = 20


def sequential_config(
    correlation: float, sparsity: float = 0.0, num_train: int = 2400, num_test: int = 600, seed: int = 0
) -> SequentialSyntheticConfig:
    """Return a `sequential_synthetic` config named after its parameters."""
    num_train = _check_count("num_train", num_train)
    num_test = _check_count("num_test", num_test)
    # A one-example draw checks every parameter the way the generator does.
    sequential.sequential_regression(1, correlation, sparsity=[0.0, 0.0, sparsity, sparsity], seed=seed)
    return SequentialSyntheticConfig(
        name=f"correlation_{float(correlation)}_sparsity_{float(sparsity)}_train_{num_train}_test_{num_test}_seed_{seed}",
        description=(
            f"Task correlation {float(correlation)}, sparse-source sparsity {float(sparsity)}, "
            f"{num_train} train and {num_test} test sequences, seed {seed}."
        ),
        correlation=float(correlation),
        sparsity=float(sparsity),
        num_train=num_train,
        num_test=num_test,
        seed=int(seed),
    )


def _short_name(config, name: str):
    """Give a predefined config a short name, such as `correlation_0.9`."""
    return dataclasses.replace(config, name=name)


def _config_with_overrides(builder_class, config, overrides: dict, make_config):
    """Return `config` (a name, an object or None) with the parameters in `overrides` replaced."""
    if not overrides:
        return config
    if config is None:
        config = builder_class.DEFAULT_BUILDER_CONFIG_NAME or builder_class.BUILDER_CONFIGS[0].name
    if isinstance(config, str):
        configs = {candidate.name: candidate for candidate in builder_class.BUILDER_CONFIGS}
        if config not in configs:
            raise ValueError(f"Unknown config {config!r}. Available: {sorted(configs)}")
        config = configs[config]
    parameters = {
        field.name: getattr(config, field.name)
        for field in dataclasses.fields(config)
        if field.name not in {base.name for base in dataclasses.fields(tfds.core.BuilderConfig)}
    }
    parameters.update(overrides)
    return make_config(**parameters)


class MmoeSynthetic(tfds.core.GeneratorBasedBuilder):
    """Two regression tasks with a controlled task correlation (`mmoe.mmoe_regression`)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [
        _short_name(mmoe_config(correlation), f"correlation_{float(correlation)}")
        for correlation in (0.5, 0.9, 1.0)
    ]

    def __init__(self, *, config=None, correlation=None, num_train=None, num_test=None,
                 input_dim=None, seed=None, **kwargs):  # fmt: skip
        overrides = {
            name: value
            for name, value in dict(
                correlation=correlation, num_train=num_train, num_test=num_test, input_dim=input_dim, seed=seed
            ).items()
            if value is not None
        }
        config = _config_with_overrides(type(self), config, overrides, mmoe_config)
        super().__init__(config=config, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        return self.dataset_info_from_configs(
            description=(
                "Synthetic regression data of the MMoE paper (Ma et al., KDD 2018): inputs "
                "x ~ N(0, I), two tasks y_k = w_k^T x + sum_i sin(alpha_i w_k^T x + beta_i) + noise "
                "whose weight vectors have cosine similarity `correlation`. Generated by "
                "mtl_layers.datasets.synthetic.mmoe.mmoe_regression; see its docstring for the "
                "defaults and their sources."
            ),
            features=tfds.features.FeaturesDict(
                {
                    "inputs": tfds.features.Tensor(
                        shape=(config.input_dim,), dtype=np.float32, doc="Input x ~ N(0, I)."
                    ),
                    "labels": tfds.features.FeaturesDict(
                        {
                            name: tfds.features.Scalar(np.float32, doc=f"Label of {name}.")
                            for name in mmoe.TASK_NAMES
                        }
                    ),
                }
            ),
            supervised_keys=("inputs", "labels"),
            citation=_sources.MMOE_CITATION,
        )

    def _split_generators(self, dl_manager):
        config = self.builder_config
        (features, labels), _ = mmoe.mmoe_regression(
            config.num_train + config.num_test, config.correlation, input_dim=config.input_dim, seed=config.seed
        )
        train, test = mmoe.split_examples(features, labels, config.num_train)
        return {"train": self._generate_examples(train), "test": self._generate_examples(test)}

    def _generate_examples(self, data):
        features, labels = data
        for index in range(features.shape[0]):
            yield index, {
                "inputs": features[index],
                "labels": {name: values[index] for name, values in labels.items()},
            }


class SequentialSynthetic(tfds.core.GeneratorBasedBuilder):
    """Two per-step regression tasks over sparse input streams (`sequential.sequential_regression`)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [
        _short_name(sequential_config(correlation, sparsity), f"correlation_{float(correlation)}_sparsity_{float(sparsity)}")
        for correlation in (0.2, 0.9)
        for sparsity in (0.0, 0.9)
    ]

    def __init__(self, *, config=None, correlation=None, sparsity=None, num_train=None, num_test=None,
                 seed=None, **kwargs):  # fmt: skip
        overrides = {
            name: value
            for name, value in dict(
                correlation=correlation, sparsity=sparsity, num_train=num_train, num_test=num_test, seed=seed
            ).items()
            if value is not None
        }
        config = _config_with_overrides(type(self), config, overrides, sequential_config)
        super().__init__(config=config, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        width = SEQUENTIAL_INPUT_DIM + SEQUENTIAL_NUM_SOURCES
        length = SEQUENTIAL_MAX_LENGTH
        return self.dataset_info_from_configs(
            description=(
                "Synthetic activity streams with two per-step regression tasks (the MMoE "
                "generator applied to a recurrent state), for Mixture-of-Sequential-Experts "
                "studies: 4 input sources of 4 dimensions, the last two missing at a step with "
                "probability `sparsity`; sequences of 5 to 20 steps padded on the right to 20. "
                "Generated by mtl_layers.datasets.synthetic.sequential.sequential_regression."
            ),
            features=tfds.features.FeaturesDict(
                {
                    "inputs": tfds.features.FeaturesDict(
                        {
                            "sequence": tfds.features.Tensor(
                                shape=(length, width),
                                dtype=np.float32,
                                doc="Observed inputs (16 columns), then one 0/1 column per source "
                                "that marks it observed; zeros at padded steps.",
                            ),
                            "mask": tfds.features.Tensor(
                                shape=(length,), dtype=np.bool_, doc="True at the valid steps."
                            ),
                        }
                    ),
                    "labels": tfds.features.FeaturesDict(
                        {
                            name: tfds.features.Tensor(
                                shape=(length,), dtype=np.float32, doc=f"Per-step label of {name}; 0 at padded steps."
                            )
                            for name in sequential.TASK_NAMES
                        }
                    ),
                }
            ),
            supervised_keys=("inputs", "labels"),
            citation=SEQUENTIAL_CITATION,
        )

    def _split_generators(self, dl_manager):
        config = self.builder_config
        data, _ = sequential.sequential_regression(
            config.num_train + config.num_test,
            config.correlation,
            sparsity=[0.0, 0.0, config.sparsity, config.sparsity],
            num_sources=SEQUENTIAL_NUM_SOURCES,
            input_dim=SEQUENTIAL_INPUT_DIM,
            max_length=SEQUENTIAL_MAX_LENGTH,
            seed=config.seed,
        )
        return {
            "train": self._generate_examples(data, 0, config.num_train),
            "test": self._generate_examples(data, config.num_train, config.num_train + config.num_test),
        }

    def _generate_examples(self, data, start: int, stop: int):
        for index in range(start, stop):
            yield index, {
                "inputs": {"sequence": data["sequence"][index], "mask": data["mask"][index]},
                "labels": {name: values[index] for name, values in data["labels"].items()},
            }
