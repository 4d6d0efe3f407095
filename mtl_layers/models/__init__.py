"""Multi-task model builders that return Keras functional models."""

from mtl_layers.models.features import (
    FEATURE_KINDS,
    PACKED_CATEGORICAL,
    PACKED_NUMERIC,
    FeatureSpec,
    build_feature_inputs,
    preprocess_features,
)
from mtl_layers.models.hypergrid_transformer import hypergrid_transformer
from mtl_layers.models.mmoe import mmoe, omoe
from mtl_layers.models.mose import mose, mose_baseline, sequence_sample_weights
from mtl_layers.models.ple import ple
from mtl_layers.models.shared_bottom import shared_bottom
from mtl_layers.models.towers import task_tower

__all__ = [
    "FEATURE_KINDS",
    "PACKED_CATEGORICAL",
    "PACKED_NUMERIC",
    "FeatureSpec",
    "build_feature_inputs",
    "hypergrid_transformer",
    "mmoe",
    "mose",
    "mose_baseline",
    "omoe",
    "preprocess_features",
    "sequence_sample_weights",
    "ple",
    "shared_bottom",
    "task_tower",
]
