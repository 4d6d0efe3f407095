"""Tests of the HyperGrid transformer builder and its three variants."""

import numpy as np
import pytest
import tensorflow as tf

import mtl_layers as mtl
from mtl_layers.compat import keras
from mtl_layers.models.hypergrid_transformer import hypergrid_transformer

VOCAB_SIZE = 40
SEQUENCE_LENGTH = 6
SIZES = {"d_model": 16, "num_heads": 2, "d_ff": 32, "num_layers": 2, "block_shape": (8, 4)}


def _tasks():
    return [
        mtl.tasks.TaskSpec("label", kind="binary", tower_units=()),
        mtl.tasks.TaskSpec("score", kind="regression", tower_units=()),
    ]


def _batch(size=8, seed=0):
    rng = np.random.default_rng(seed)
    token_ids = rng.integers(1, VOCAB_SIZE, size=(size, SEQUENCE_LENGTH)).astype("int32")
    token_ids[:, -2:] = 0  # padding
    return {"token_ids": token_ids, "task_id": (np.arange(size) % 2).astype("int32")}


def _build(tasks=None, **overrides):
    arguments = {**SIZES, **overrides}
    return hypergrid_transformer(
        tasks or _tasks(), vocab_size=VOCAB_SIZE, sequence_length=SEQUENCE_LENGTH, **arguments
    )


def _layers_of_type(model, layer_type):
    found = []
    for layer in model.layers:
        found.extend(sub for sub in layer._flatten_layers() if isinstance(sub, layer_type))
    return found


@pytest.mark.parametrize("mode", ["LG", "GL"])
@pytest.mark.parametrize("conditioning_source", ["task_embedding", "prefix"])
def test_outputs_one_head_per_task(mode, conditioning_source):
    model = _build(mode=mode, conditioning_source=conditioning_source)
    outputs = model(_batch())
    assert sorted(outputs) == ["label", "score"]
    assert tuple(outputs["label"].shape) == (8, 1)
    assert tuple(outputs["score"].shape) == (8, 1)
    assert np.all((outputs["label"].numpy() > 0) & (outputs["label"].numpy() < 1))


def test_feed_forward_outputs_are_hypergrid():
    model = _build()
    grids = _layers_of_type(model, mtl.HyperGridDense)
    assert len(grids) == SIZES["num_layers"]
    assert all(grid.units == SIZES["d_model"] for grid in grids)


def test_compiled_kernel_reaches_every_hypergrid_layer(tmp_path):
    model = _build(compiled_kernel=False)
    grids = _layers_of_type(model, mtl.HyperGridDense)
    assert len(grids) == SIZES["num_layers"]
    assert all(grid.compiled_kernel is False for grid in grids)
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = _layers_of_type(keras.models.load_model(path), mtl.HyperGridDense)
    assert [grid.compiled_kernel for grid in reloaded] == [False] * SIZES["num_layers"]
    assert all(grid.compiled_kernel for grid in _layers_of_type(_build(), mtl.HyperGridDense))


def test_dense_variant_has_no_hypergrid():
    model = _build(feed_forward="dense")
    assert _layers_of_type(model, mtl.HyperGridDense) == []
    assert sorted(model(_batch())) == ["label", "score"]


def test_hypergrid_adds_few_parameters():
    vanilla = _build(feed_forward="dense").count_params()
    hypergrid = _build().count_params()
    # Per block: a global vector (4 columns) and a local projection 16 -> 4 rows, plus one
    # task embedding table (2 x 16) shared by the blocks.
    expected_extra = SIZES["num_layers"] * (4 + 16 * 4 + 4) + 2 * 16
    assert hypergrid - vanilla == expected_extra


def test_single_task_model():
    task = mtl.tasks.TaskSpec("label", tower_units=())
    model = _build(tasks=[task], feed_forward="dense")
    batch = _batch()
    outputs = model({"token_ids": batch["token_ids"], "task_id": np.zeros(8, "int32")})
    assert list(outputs) == ["label"]


def test_padding_does_not_change_outputs():
    model = _build()
    batch = _batch()
    changed = dict(batch)
    # Padding positions are masked in attention and pooling, so only real tokens matter.
    longer = np.concatenate([batch["token_ids"][:, :4], np.zeros((8, 2), "int32")], axis=1)
    changed["token_ids"] = longer
    np.testing.assert_allclose(
        model(batch)["score"].numpy(), model(changed)["score"].numpy(), rtol=1e-6
    )


def test_task_id_changes_outputs():
    model = _build()
    batch = _batch()
    swapped = {"token_ids": batch["token_ids"], "task_id": 1 - batch["task_id"]}
    assert np.abs(model(batch)["score"].numpy() - model(swapped)["score"].numpy()).max() > 1e-4


def test_task_kernels_keep_input_order():
    # 4 x 4 blocks make HyperGridDense's "auto" choice the per-task kernels, so the model
    # sorts the batch by task and restores the order before the towers.
    model = _build(block_shape=(4, 4), dropout=0.0)
    batch = _batch(size=6, seed=3)
    batch["task_id"] = np.array([1, 0, 1, 1, 0, 0], "int32")
    together = model(batch)
    for index in range(6):
        alone = model({name: values[index : index + 1] for name, values in batch.items()})
        for task in ("label", "score"):
            np.testing.assert_allclose(
                together[task].numpy()[index], alone[task].numpy()[0], rtol=1e-5, atol=1e-6
            )


@pytest.mark.parametrize(
    "overrides", [{}, {"conditioning_source": "prefix"}, {"feed_forward": "dense"}]
)
def test_task_id_batch_mismatch_rejected(overrides):
    model = _build(**overrides)
    batch = _batch()
    batch["task_id"] = batch["task_id"][:5]
    with pytest.raises(ValueError, match="same batch size"):
        model(batch)


def test_global_mode_has_no_task_conditioning():
    model = _build(mode="GG")
    names = [layer.name for layer in model.layers]
    assert "task_conditioning" not in names
    assert "sort_tokens_by_task" not in names
    assert sorted(model(_batch())) == ["label", "score"]


def test_mixed_batches_train():
    keras.utils.set_random_seed(1)
    model = _build(dropout=0.0)
    size = 128
    batch = _batch(size, seed=2)
    # Label: whether token 3 appears; score: the share of tokens below 20.
    has_token = np.any(batch["token_ids"] == 3, axis=1).astype("float32")
    low_share = np.mean((batch["token_ids"] > 0) & (batch["token_ids"] < 20), axis=1)
    labels = {"label": has_token, "score": low_share.astype("float32")}
    weights = {
        "label": (batch["task_id"] == 0).astype("float32"),
        "score": (batch["task_id"] == 1).astype("float32"),
    }
    model.compile(keras.optimizers.Adam(3e-3), loss={t.name: t.loss() for t in _tasks()})
    history = model.fit(batch, labels, sample_weight=weights, epochs=15, batch_size=32, verbose=0)
    assert history.history["loss"][-1] < 0.7 * history.history["loss"][0]


@pytest.mark.parametrize(
    "options",
    [{"conditioning_source": "task_embedding"}, {"conditioning_source": "prefix"}, {"mode": "GG"}],
)
def test_keras_file_reloads(tmp_path, options):
    model = _build(**options)
    batch = _batch()
    expected = model.predict_on_batch(batch)
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    actual = reloaded.predict_on_batch(batch)
    for name in expected:
        np.testing.assert_allclose(actual[name], expected[name], rtol=1e-5, atol=1e-6)


def test_saved_model_export_takes_task_id(tmp_path):
    model = _build()
    batch = _batch()
    expected = model.predict_on_batch(batch)
    version_dir = mtl.export.export_saved_model(model, tmp_path / "export")
    signature = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    served = signature(
        token_ids=tf.constant(batch["token_ids"]), task_id=tf.constant(batch["task_id"])
    )
    for name in expected:
        np.testing.assert_allclose(served[name].numpy(), expected[name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"block_shape": (5, 4)}, "must divide `d_ff`"),
        ({"block_shape": (8, 3)}, "must divide `d_model`"),
        ({"feed_forward": "moe"}, "feed_forward"),
        ({"conditioning_source": "cls"}, "conditioning_source"),
        ({"num_heads": 3}, "num_heads"),
        ({"num_layers": 0}, "num_layers"),
        ({"compiled_kernel": "no"}, "`compiled_kernel` must be True or False"),
    ],
)
def test_invalid_arguments_rejected(overrides, message):
    with pytest.raises(ValueError, match=message):
        _build(**overrides)



def test_task_prefix_rejects_other_sequence_length():
    from mtl_layers.models.hypergrid_transformer import TaskPrefixEmbedding

    layer = TaskPrefixEmbedding(VOCAB_SIZE, SEQUENCE_LENGTH, d_model=8, num_tasks=2)
    batch = _batch()
    layer(batch["token_ids"], batch["task_id"])
    longer = np.concatenate([batch["token_ids"], batch["token_ids"][:, :2]], axis=1)

    with pytest.raises(ValueError, match=f"to have value {SEQUENCE_LENGTH}"):
        layer(longer, batch["task_id"])


@pytest.mark.parametrize("mode", ["LG", "GG"])
def test_weights_exist_before_first_call(mode):
    model = _build(mode=mode)
    count = len(model.weights)
    model.predict_on_batch(_batch())
    assert len(model.weights) == count
