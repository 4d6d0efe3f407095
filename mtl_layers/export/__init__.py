"""Export multi-task models for TF Serving."""

from mtl_layers.export import warmup
from mtl_layers.export.saved_model import (
    EXAMPLE_SIGNATURE,
    SERVING_SIGNATURE,
    check_export_dir,
    export_saved_model,
    next_version,
)

__all__ = [
    "EXAMPLE_SIGNATURE",
    "SERVING_SIGNATURE",
    "check_export_dir",
    "export_saved_model",
    "next_version",
    "warmup",
]
