"""The compiled gated product of `HyperGridDense`: `kernels/hypergrid_matmul.cc`.

HyperGridDense computes y_b = x_b (W * expand(gate_b)) for every example b. Without a
kernel of its own it runs one of its block forms, whose elementwise work is memory-bound
and costs more than the product itself for small blocks on CPU. The compiled op applies
the gate while it packs the kernel into the tiles of its matrix product, so the gated
kernel is formed 32 columns at a time in the core's cache and never written to memory.
Its gradient op gates each column block's partial product of the input gradient in
registers, takes the gate gradient from the same partial products, and scales the output
gradient by the gate before the kernel-gradient product (docs/hypergrid.md).

The op is built into the same library as SequentialExpert's kernel (`_compiled_lstm`) and
follows the same rules. It serves training calls (`training=True`, as `fit` and
`train_on_batch` pass it), and inference calls that run eagerly or inside the functions
that Keras traces for `evaluate` and `predict`, on CPU, in float32, on the TensorFlow
backend outside XLA. It never enters a graph that an export or SavedModel keeps, so TF
Serving needs nothing extra: a `tf.function` of your own runs the block forms for
inference calls, because it may be saved. It also needs features and units that are
multiples of 32, at least 16 positions per example, and blocks of fewer than 256 rows
and columns. The block forms run everywhere else.
"""

from typing import Optional

import tensorflow as tf
from absl import logging

from mtl_layers.compat import backend_name, in_xla_context
from mtl_layers.layers import _compiled_lstm

# Columns of the op's packed panels: features and units must be multiples of this.
PANEL = 32
# Fewer positions per example than this leave too few rows to amortise forming each
# example's gated kernel, and the block forms are faster.
MIN_POSITIONS = 16

# Blocks with this many rows or columns, or more, leave the block forms so little extra
# work that HyperGridDense runs them instead of the op.
MAX_BLOCK_SIZE = 256

_warned = {"value": False}


def shape_reason(features: int, units: int, positions: Optional[int], dtype) -> Optional[str]:
    """Return why the op cannot take these static sizes, or None when it can."""
    if "float32" not in str(dtype):
        return f"it computes in float32, and the inputs are {dtype}"
    if features % PANEL or units % PANEL:
        return (
            f"it needs features and units that are multiples of {PANEL}, and they are "
            f"{features} and {units}"
        )
    if positions is None or positions < MIN_POSITIONS:
        return f"it needs at least {MIN_POSITIONS} positions per example (known when traced)"
    return None


@tf.autograph.experimental.do_not_convert
def unavailable_reason(training) -> Optional[str]:
    """Return why this call cannot use the compiled op, or None when it can.

    Training calls may use it in any graph that is not being exported. Inference calls
    may use it only eagerly and inside the functions of Keras's `evaluate` and `predict`
    (`_compiled_lstm.unsaved_call`), because Keras never saves those.
    """
    if backend_name() != "tensorflow":
        return f"it is a TensorFlow op, and the Keras backend is {backend_name()!r}"
    if in_xla_context():
        return "XLA compiles this call"
    reason = _compiled_lstm.call_reason(training, inference=True)
    if reason is not None:
        return reason
    if _compiled_lstm._load() is None:
        reason = _compiled_lstm._state["reason"]
        if not _warned["value"] and not reason.startswith(_compiled_lstm._DISABLE_VARIABLE):
            _warned["value"] = True
            logging.warning(
                "HyperGridDense runs its block forms instead of the compiled gated "
                "product because %s. Results are the same; calls with small blocks "
                "take longer. Set %s=0 to skip the compiled kernels without this "
                "warning.",
                reason,
                _compiled_lstm._DISABLE_VARIABLE,
            )
        return reason
    return None


@tf.autograph.experimental.do_not_convert
def run(inputs, kernel, gate):
    """Return `y[b] = inputs[b] (kernel * expand(gate[b]))`.

    Args:
        inputs: `(batch, positions, features)` float32.
        kernel: `(features, units)` float32.
        gate: `(batch, grid_rows, grid_cols)` float32, one value per block of the kernel.

    Returns:
        `(batch, positions, units)` float32.
    """
    return _compiled_lstm._load().mtl_layers_hyper_grid_matmul(inputs, kernel, gate)
