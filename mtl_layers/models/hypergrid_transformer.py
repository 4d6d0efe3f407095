"""A small encoder transformer whose feed-forward output projections are HyperGridDense."""

from typing import Optional, Sequence

from mtl_layers.compat import IS_KERAS_2, keras, ops, register_serializable
from mtl_layers.layers import HyperGridDense, TaskEmbedding, _runtime_checks, _validation
from mtl_layers.models.sort_by_task import SortByTask
from mtl_layers.models.towers import task_tower
from mtl_layers.tasks import TaskSpec, check_tasks

FEED_FORWARD_KINDS = ("hypergrid", "dense")
CONDITIONING_SOURCES = ("task_embedding", "prefix")
PAD_ID = 0


@register_serializable
class TaskPrefixEmbedding(keras.layers.Layer):
    """Embed token ids and positions, and put a learned task token in front.

    Returns `(hidden, mask)`: `hidden` of shape `(batch, 1 + sequence_length, d_model)`
    whose position 0 is the task token of each example's task, and `mask` of shape
    `(batch, 1 + sequence_length)`, 1.0 for the task token and every non-padding token.
    Token id 0 is padding.
    """

    def __init__(self, vocab_size, sequence_length, d_model, num_tasks, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = _validation.check_positive_int("vocab_size", vocab_size)
        self.sequence_length = _validation.check_positive_int("sequence_length", sequence_length)
        self.d_model = _validation.check_positive_int("d_model", d_model)
        self.num_tasks = _validation.check_positive_int("num_tasks", num_tasks)
        self.token_embedding = keras.layers.Embedding(vocab_size, d_model, name="tokens")
        self.position_embedding = keras.layers.Embedding(
            sequence_length + 1, d_model, name="positions"
        )
        self.task_embedding = TaskEmbedding(num_tasks, d_model, name="task_prefix")

    def build(self, token_ids_shape, task_ids_shape=None):
        # Keras 3 reloads a saved model through build(), so it creates the sublayers' state.
        batch = tuple(token_ids_shape)[0]
        self.token_embedding.build(tuple(token_ids_shape))
        self.position_embedding.build((self.sequence_length + 1,))
        self.task_embedding.build((batch,))
        # Token ids of another length would meet the position table in a raw shape error.
        self.input_spec = keras.layers.InputSpec(ndim=2, axes={-1: self.sequence_length})
        super().build(token_ids_shape)

    def call(self, token_ids, task_ids):
        token_ids = ops.cast(token_ids, "int32")
        task_ids = ops.reshape(task_ids, (-1,))
        task_ids = _runtime_checks.check_same_batch(
            "The HyperGrid transformer", token_ids, "token_ids", task_ids
        )
        tokens = self.token_embedding(token_ids)
        prefix = ops.expand_dims(self.task_embedding(task_ids), 1)
        hidden = ops.concatenate([ops.cast(prefix, tokens.dtype), tokens], axis=1)
        positions = self.position_embedding(ops.arange(self.sequence_length + 1))
        hidden = hidden + ops.cast(positions, hidden.dtype)
        token_mask = ops.cast(ops.not_equal(token_ids, PAD_ID), "float32")
        mask = ops.concatenate([ops.ones_like(token_mask[:, :1]), token_mask], axis=1)
        return hidden, mask

    def compute_output_shape(self, token_ids_shape, task_ids_shape=None):
        batch = tuple(token_ids_shape)[0]
        return (batch, self.sequence_length + 1, self.d_model), (batch, self.sequence_length + 1)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocab_size": self.vocab_size,
                "sequence_length": self.sequence_length,
                "d_model": self.d_model,
                "num_tasks": self.num_tasks,
            }
        )
        return config


@register_serializable
class HyperGridEncoderBlock(keras.layers.Layer):
    """One pre-layer-norm transformer encoder block with a task-gated feed-forward part.

        h = h + Dropout(MultiHeadAttention(LN(h)))
        z = LN(h)
        h = h + Dropout(W_out(activation(W_in z), conditioning))

    `W_out` is a `HyperGridDense` (`feed_forward="hypergrid"`), as HyperGrid gates the
    second projection of each feed-forward block, or a plain `Dense`
    (`feed_forward="dense"`, the vanilla baseline). With `conditioning_source="prefix"`
    the conditioning is z at position 0, the task token; with `"task_embedding"` it is
    the `conditioning` argument.

    Call arguments:
        hidden: `(batch, positions, d_model)`.
        mask: `(batch, positions)`, 1.0 for positions that attention may read.
        conditioning: `(batch, conditioning_dim)`, used with
            `conditioning_source="task_embedding"` and a HyperGrid feed-forward part.
        task_ids: Optional `(batch,)` integer task ids from which `conditioning` was
            looked up. With them HyperGridDense may form one gated kernel per task (see
            its `task_kernels` argument). Ignored with `conditioning_source="prefix"`.

    `num_tasks`, if given, is passed to the HyperGridDense layer, whose choice between
    per-task kernels and block forms reads it. So is `compiled_kernel`: False keeps the
    layer off its compiled gated product (see `HyperGridDense`).
    """

    def __init__(
        self,
        d_model,
        num_heads,
        d_ff,
        feed_forward="hypergrid",
        mode="LG",
        block_shape=(16, 16),
        conditioning_source="task_embedding",
        dropout=0.1,
        activation="gelu",
        num_tasks=None,
        compiled_kernel=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.d_model = _validation.check_positive_int("d_model", d_model)
        self.num_heads = _validation.check_positive_int("num_heads", num_heads)
        self.d_ff = _validation.check_positive_int("d_ff", d_ff)
        if self.d_model % self.num_heads:
            raise ValueError(
                "`num_heads` must divide `d_model`. Received: "
                f"d_model={d_model}, num_heads={num_heads}."
            )
        if feed_forward not in FEED_FORWARD_KINDS:
            raise ValueError(
                f"`feed_forward` must be one of {FEED_FORWARD_KINDS}. "
                f"Received: feed_forward={feed_forward!r}"
            )
        if conditioning_source not in CONDITIONING_SOURCES:
            raise ValueError(
                f"`conditioning_source` must be one of {CONDITIONING_SOURCES}. "
                f"Received: conditioning_source={conditioning_source!r}"
            )
        self.feed_forward = feed_forward
        self.mode = mode
        self.block_shape = tuple(block_shape)
        self.conditioning_source = conditioning_source
        self.dropout = _validation.check_rate("dropout", dropout)
        self.activation = activation
        self.num_tasks = num_tasks
        self.compiled_kernel = _validation.check_bool("compiled_kernel", compiled_kernel)

        self.attention_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="attention_norm")
        self.attention = keras.layers.MultiHeadAttention(
            num_heads, self.d_model // self.num_heads, dropout=self.dropout, name="attention"
        )
        self.feed_forward_norm = keras.layers.LayerNormalization(
            epsilon=1e-6, name="feed_forward_norm"
        )
        self.feed_forward_in = keras.layers.Dense(d_ff, activation=activation, name="ff_in")
        if feed_forward == "hypergrid":
            self.feed_forward_out = HyperGridDense(
                d_model,
                block_shape=block_shape,
                mode=mode,
                num_tasks=num_tasks,
                compiled_kernel=self.compiled_kernel,
                name="ff_out",
            )
        else:
            self.feed_forward_out = keras.layers.Dense(d_model, name="ff_out")
        self.dropout_layer = keras.layers.Dropout(self.dropout)

    def build(self, hidden_shape, mask_shape=None, conditioning_shape=None, task_ids_shape=None):
        # Keras 3 reloads a saved model through build(), so it creates the sublayers' state.
        # tf_keras passes only hidden_shape and builds the remaining sublayers on first call.
        hidden_shape = tuple(hidden_shape)
        inner_shape = hidden_shape[:-1] + (self.d_ff,)
        self.attention_norm.build(hidden_shape)
        if not IS_KERAS_2:
            self.attention.build(hidden_shape, hidden_shape)
        self.feed_forward_norm.build(hidden_shape)
        self.feed_forward_in.build(hidden_shape)
        if self.feed_forward == "dense":
            self.feed_forward_out.build(inner_shape)
        elif self.feed_forward_out.mode == "GG":
            # The global gate reads no conditioning, and the call passes none.
            self.feed_forward_out.build(inner_shape)
        elif self.conditioning_source == "prefix":
            self.feed_forward_out.build(inner_shape, (hidden_shape[0], self.d_model))
        elif conditioning_shape is not None:
            self.feed_forward_out.build(inner_shape, tuple(conditioning_shape))
        super().build(hidden_shape)

    def call(self, hidden, mask, conditioning=None, task_ids=None, training=None):
        # Every query may read every position whose mask is 1: (batch, positions, positions).
        positions = ops.shape(hidden)[1]
        attention_mask = ops.repeat(ops.expand_dims(ops.cast(mask, "bool"), 1), positions, axis=1)
        normed = self.attention_norm(hidden)
        attended = self.attention(
            normed, normed, attention_mask=attention_mask, training=training
        )
        hidden = hidden + self.dropout_layer(attended, training=training)

        normed = self.feed_forward_norm(hidden)
        inner = self.feed_forward_in(normed)
        if self.feed_forward == "dense":
            outer = self.feed_forward_out(inner)
        else:
            if self.conditioning_source == "prefix":
                # The task-token state differs per example, so task ids would not group
                # examples that share a gate. With the task embedding they let
                # HyperGridDense form one gated kernel per task.
                conditioning = normed[:, 0, :]
                task_ids = None
            outer = self.feed_forward_out(inner, conditioning, task_ids)
        return hidden + self.dropout_layer(outer, training=training)

    def compute_output_shape(
        self, hidden_shape, mask_shape=None, conditioning_shape=None, task_ids_shape=None
    ):
        return tuple(hidden_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "d_model": self.d_model,
                "num_heads": self.num_heads,
                "d_ff": self.d_ff,
                "feed_forward": self.feed_forward,
                "mode": self.mode,
                "block_shape": list(self.block_shape),
                "conditioning_source": self.conditioning_source,
                "dropout": self.dropout,
                "activation": self.activation,
                "num_tasks": self.num_tasks,
                "compiled_kernel": self.compiled_kernel,
            }
        )
        return config


@register_serializable
class MaskedMeanPooling(keras.layers.Layer):
    """Average `(batch, positions, features)` over the positions whose mask is 1."""

    def call(self, hidden, mask):
        weights = ops.expand_dims(ops.cast(mask, hidden.dtype), -1)
        return ops.sum(hidden * weights, axis=1) / ops.maximum(ops.sum(weights, axis=1), 1.0)

    def compute_output_shape(self, hidden_shape, mask_shape=None):
        hidden_shape = tuple(hidden_shape)
        return (hidden_shape[0], hidden_shape[-1])


def _check_block_shape_fits(block_shape, d_ff, d_model):
    """Raise a ValueError that names `d_ff` or `d_model` when `block_shape` does not divide it.

    HyperGridDense checks the same when it is built, but there the sizes are only "input
    features" and "units", which a caller of the builder never passed.
    """
    if (
        not isinstance(block_shape, (list, tuple))
        or len(block_shape) != 2
        or not all(isinstance(size, int) and not isinstance(size, bool) for size in block_shape)
    ):
        # HyperGridDense's own check gives the message for a malformed pair.
        return
    block_rows, block_cols = block_shape
    if block_rows >= 1 and d_ff % block_rows:
        raise ValueError(
            "The rows of `block_shape` must divide `d_ff`, the input width of each gated "
            f"projection. Received: block_shape={tuple(block_shape)}, d_ff={d_ff}. Choose "
            f"block rows that divide {d_ff}, or change `d_ff`."
        )
    if block_cols >= 1 and d_model % block_cols:
        raise ValueError(
            "The columns of `block_shape` must divide `d_model`, the output width of each "
            f"gated projection. Received: block_shape={tuple(block_shape)}, d_model={d_model}. "
            f"Choose block columns that divide {d_model}, or change `d_model`."
        )


def hypergrid_transformer(
    tasks: Sequence[TaskSpec],
    vocab_size: int,
    sequence_length: int,
    d_model: int = 64,
    num_heads: int = 4,
    d_ff: int = 128,
    num_layers: int = 2,
    feed_forward: str = "hypergrid",
    mode: str = "LG",
    block_shape: Sequence[int] = (16, 16),
    conditioning_source: str = "task_embedding",
    dropout: float = 0.1,
    tower_dropout: float = 0.0,
    compiled_kernel: bool = True,
    name: Optional[str] = "hypergrid_transformer",
):
    """Build an encoder transformer for many text tasks with one output per task.

    HyperGrid Transformers (Tay et al., "HyperGrid Transformers: Towards A Single Model
    for Multiple Tasks", ICLR 2021): every example carries its task, the second
    projection of each feed-forward block is a `HyperGridDense` gated by the task, and
    each task reads a pooled representation through its own tower. The model takes
    `token_ids` (`(batch, sequence_length)`, 0 = padding) and `task_id` (`(batch,)`, the
    index of the example's task in `tasks`). A learned token of the example's task is
    put in front of the sequence (the task prefix), so every variant receives the task:

    - `feed_forward="hypergrid"`: the HyperGrid model.
    - `feed_forward="dense"`: the vanilla multi-task baseline (plain Dense projections).
    - one task in `tasks`: a single-task model.

    The representation for the heads is the mean over the task token and the non-padding
    tokens after a final layer norm. Each task's output is computed by `task_tower`, so a
    batch mixing tasks yields every task's output for every example; train each output
    only on its own task's examples (sample weight 0 elsewhere).

    Args:
        tasks: The tasks, as `TaskSpec`s; `task_id` k selects `tasks[k]`.
        vocab_size: Number of token ids, including 0 for padding.
        sequence_length: Number of token ids per example (without the task token).
        d_model: Width of the hidden states.
        num_heads: Attention heads; must divide `d_model`.
        d_ff: Inner width of the feed-forward blocks.
        num_layers: Number of encoder blocks.
        feed_forward: `"hypergrid"` or `"dense"`, the output projection of each
            feed-forward block.
        mode: HyperGridDense mode (`"LG"`, `"GL"`, `"LL"`, `"GG"`).
        block_shape: HyperGridDense block shape; the rows must divide `d_ff` and the
            columns `d_model`.
        conditioning_source: `"task_embedding"` (a learned vector per task, shared by all
            blocks) or `"prefix"` (each block's normalised task-token state).
        dropout: Dropout rate in the encoder blocks.
        tower_dropout: Dropout rate after each tower hidden layer.
        compiled_kernel: Passed to every `HyperGridDense`: whether it may run its
            compiled gated product on CPU (default True). False runs the block forms or
            per-task kernels everywhere; the function is the same.
        name: Model name.

    Returns:
        A functional `keras.Model` with inputs `{"token_ids", "task_id"}` and a dict of
        outputs keyed by task name.

    Example:

    >>> import numpy as np
    >>> import mtl_layers as mtl
    >>> tasks = [mtl.tasks.TaskSpec("cola"), mtl.tasks.TaskSpec("stsb", kind="regression")]
    >>> model = mtl.models.hypergrid_transformer(tasks, vocab_size=100, sequence_length=8)
    >>> outputs = model({"token_ids": np.ones((2, 8), "int32"), "task_id": np.array([0, 1])})
    >>> sorted(outputs), tuple(outputs["cola"].shape)
    (['cola', 'stsb'], (2, 1))
    """
    tasks = check_tasks(tasks)
    num_layers = _validation.check_positive_int("num_layers", num_layers)
    if feed_forward == "hypergrid":
        _check_block_shape_fits(block_shape, d_ff, d_model)
    token_ids = keras.Input((sequence_length,), dtype="int32", name="token_ids")
    task_id = keras.Input((), dtype="int32", name="task_id")

    # With task-embedding conditioning, HyperGridDense forms one gated kernel per task. The
    # batch is sorted by task once here, so that no layer has to reorder it, and the
    # pooled states return to the input order before the towers.
    # Mode GG gates every example alike and reads no conditioning.
    by_task = (
        feed_forward == "hypergrid" and conditioning_source == "task_embedding" and mode != "GG"
    )
    encoder_token_ids, encoder_task_id = token_ids, task_id
    if by_task:
        encoder_token_ids = SortByTask(name="sort_tokens_by_task")(token_ids, task_id)
        encoder_task_id = SortByTask(name="sort_task_ids")(task_id, task_id)

    hidden, mask = TaskPrefixEmbedding(
        vocab_size, sequence_length, d_model, len(tasks), name="embedding"
    )(encoder_token_ids, encoder_task_id)
    hidden = keras.layers.Dropout(dropout, name="embedding_dropout")(hidden)

    conditioning = None
    if by_task:
        conditioning = TaskEmbedding(len(tasks), d_model, name="task_conditioning")(
            encoder_task_id
        )
    for depth in range(num_layers):
        block = HyperGridEncoderBlock(
            d_model,
            num_heads,
            d_ff,
            feed_forward=feed_forward,
            mode=mode,
            block_shape=block_shape,
            conditioning_source=conditioning_source,
            dropout=dropout,
            num_tasks=len(tasks),
            compiled_kernel=compiled_kernel,
            name=f"encoder_{depth}",
        )
        if conditioning is None:
            hidden = block(hidden, mask)
        else:
            hidden = block(hidden, mask, conditioning, encoder_task_id)
    hidden = keras.layers.LayerNormalization(epsilon=1e-6, name="final_norm")(hidden)
    pooled = MaskedMeanPooling(name="pooling")(hidden, mask)
    if by_task:
        pooled = SortByTask(restore=True, name="restore_batch_order")(pooled, task_id)

    outputs = {task.name: task_tower(task, pooled, dropout=tower_dropout) for task in tasks}
    return keras.Model({"token_ids": token_ids, "task_id": task_id}, outputs, name=name)
