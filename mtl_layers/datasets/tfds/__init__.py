"""TensorFlow Datasets builders for the library's data sets.

Importing this package, which `import mtl_layers.datasets` does, registers these builders
with TFDS, so `tfds.load(name)` and `tfds build --imports mtl_layers.datasets name` find
them:

* `uci_adult` (configs `group1`, `group2`): UCI Adult with the MMoE census task groups.
* `census_income_kdd` (configs `group1`, `group2`, `group1_test_file`,
  `group2_test_file`): UCI Census-Income (KDD) with the same task groups.
* `movielens_sequences`: MovieLens 100K, one rating sequence per user, two tasks per step.
* `glue_multitask`: CoLA, MRPC, RTE, STS-B and SST-2 mixed, with a task id per example.
* `mmoe_synthetic` and `sequential_synthetic`: the synthetic generators, with the
  generating parameters as configs or builder keyword arguments.

Every builder gives `(inputs, labels)` with `as_supervised=True`. Source files come from
TFDS's manual folder or are downloaded; see `docs/tfds.md`.

When `tensorflow_datasets` is not installed, nothing is registered, importing
`mtl_layers.datasets` still works, and using a builder class from here raises ImportError
that names the package to install.
"""

BUILDER_NAMES = (
    "uci_adult",
    "census_income_kdd",
    "movielens_sequences",
    "glue_multitask",
    "mmoe_synthetic",
    "sequential_synthetic",
)

_BUILDER_CLASSES = (
    "CensusIncomeKdd",
    "GlueMultitask",
    "MmoeSynthetic",
    "MovielensSequences",
    "SequentialSynthetic",
    "UciAdult",
)

try:
    import tensorflow_datasets  # noqa: F401  (only checks that TFDS is installed)
except ImportError as _error:
    _TFDS_IMPORT_ERROR = _error
else:
    _TFDS_IMPORT_ERROR = None

if _TFDS_IMPORT_ERROR is None:
    from mtl_layers.datasets.tfds.census_income_kdd import CensusIncomeKdd
    from mtl_layers.datasets.tfds.glue_multitask import GlueMultitask
    from mtl_layers.datasets.tfds.movielens_sequences import MovielensSequences
    from mtl_layers.datasets.tfds.synthetic import MmoeSynthetic, SequentialSynthetic
    from mtl_layers.datasets.tfds.uci_adult import UciAdult
else:

    def __getattr__(name):
        if name in _BUILDER_CLASSES:
            raise ImportError(
                f"The TFDS builder {name} needs tensorflow-datasets, which failed to import "
                f"({_TFDS_IMPORT_ERROR}). Install it with `pip install mtl_layers[datasets]`."
            ) from _TFDS_IMPORT_ERROR
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["BUILDER_NAMES", *_BUILDER_CLASSES]
