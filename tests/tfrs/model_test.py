"""Tests of `mtl_layers.tfrs.MultiTaskModel` on MovieLens 100K.

TensorFlow Recommenders runs only in Keras 2 mode, so in Keras 3 mode only the error
message is tested and the Keras 2 run of `tests/run.sh` covers the rest.
"""

import importlib

import numpy as np
import pytest
import tensorflow as tf

import mtl_layers as mtl
from mtl_layers.compat import IS_KERAS_2, keras
from mtl_layers.tasks import TaskSpec

needs_keras_2 = pytest.mark.skipif(
    not IS_KERAS_2,
    reason="TensorFlow Recommenders needs Keras 2 (TF_USE_LEGACY_KERAS=1); the Keras 2 run covers this",
)

NUM_TRAIN = 4096


@pytest.mark.skipif(IS_KERAS_2, reason="checks the Keras 3 mode error")
def test_keras3_mode_raises_clear_error():
    tfrs_package = importlib.import_module("mtl_layers.tfrs")
    with pytest.raises(ImportError, match="TF_USE_LEGACY_KERAS=1"):
        tfrs_package.MultiTaskModel
    with pytest.raises(ImportError, match="TF_USE_LEGACY_KERAS=1"):
        from mtl_layers.tfrs import RetrievalSpec  # noqa: F401
    with pytest.raises(ImportError, match="TF_USE_LEGACY_KERAS=1"):
        importlib.import_module("mtl_layers.tfrs.model")


@pytest.fixture(scope="module")
def movielens(data_root):
    from mtl_layers.tfrs import movielens_data

    return movielens_data.load_movielens_ratings(data_dir=data_root, embedding_dim=4, tower_units=(8,))


def _dataset(split, count, batch_size):
    features = {name: values[:count] for name, values in split.features.items()}
    labels = {name: values[:count] for name, values in split.labels.items()}
    return tf.data.Dataset.from_tensor_slices((features, labels)).batch(batch_size)


def _retrieval(movielens, **options):
    from mtl_layers.tfrs import RetrievalSpec

    return RetrievalSpec(
        query_features=movielens.user_features,
        candidate_features=movielens.movie_features,
        embedding_dim=8,
        top_k=(10, 100),
        **options,
    )


@pytest.fixture(scope="module")
def trained(movielens):
    """An MMoE with retrieval and uncertainty weighting, after two short epochs."""
    from mtl_layers.tfrs import MultiTaskModel

    keras.utils.set_random_seed(0)
    model = MultiTaskModel(
        movielens.tasks,
        movielens.feature_specs,
        architecture="mmoe",
        architecture_options={"num_experts": 3, "expert_units": 8},
        retrieval=_retrieval(movielens),
        candidates=movielens.movies,
        uncertainty_weighting=True,
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    before = model.uncertainty_weighting.log_variances.numpy().copy()
    history = model.fit(
        _dataset(movielens.train, NUM_TRAIN, 512),
        validation_data=_dataset(movielens.test, 2048, 1024),
        epochs=2,
        verbose=0,
    )
    return model, history.history, before


@needs_keras_2
def test_history_reports_each_task(trained):
    _, history, _ = trained
    for prefix in ("", "val_"):
        for name in ("rating_loss", "liked_loss", "retrieval_loss", "rating_rmse", "liked_auc"):
            assert prefix + name in history, prefix + name
            assert len(history[prefix + name]) == 2
            assert np.all(np.isfinite(history[prefix + name])), prefix + name
        for name in ("rating", "liked", "retrieval"):
            assert f"{prefix}{name}_log_variance" in history
    assert "val_retrieval_top_k/top_10_categorical_accuracy" in history
    assert "val_retrieval_top_k/top_100_categorical_accuracy" in history
    assert "retrieval_top_k/top_10_categorical_accuracy" not in history


@needs_keras_2
def test_training_improves_ranking_metrics(trained):
    _, history, _ = trained
    assert history["val_rating_rmse"][-1] < history["val_rating_rmse"][0]
    assert history["val_retrieval_top_k/top_100_categorical_accuracy"][-1] > 0.0


@needs_keras_2
def test_uncertainty_weights_are_learned(trained):
    model, _, before = trained
    after = model.uncertainty_weighting.log_variances.numpy()
    assert model.uncertainty_weighting.log_variances.trainable
    assert not np.allclose(after, before)
    weights = model.uncertainty_weighting.effective_weights()
    assert sorted(weights) == ["liked", "rating", "retrieval"]
    np.testing.assert_allclose(weights["rating"], 0.5 * np.exp(-after[0]), rtol=1e-6)


@needs_keras_2
def test_uncertainty_loss_formula(trained, movielens):
    model, _, _ = trained
    batch = next(iter(_dataset(movielens.test, 256, 256)))
    model.reset_metrics()
    total = float(model.compute_loss(batch, training=False))
    log_variances = model.uncertainty_weighting.log_variances.numpy()
    expected = 0.0
    for index, name in enumerate(model.uncertainty_weighting.task_names):
        loss = float(model.loss_trackers[name].result())
        scale = 0.5 if name == "rating" else 1.0
        expected += scale * np.exp(-log_variances[index]) * loss + 0.5 * log_variances[index]
    np.testing.assert_allclose(total, expected, rtol=1e-5)


@needs_keras_2
def test_fixed_loss_weights(movielens):
    from mtl_layers.tfrs import MultiTaskModel

    tasks = [
        TaskSpec("rating", kind="regression", loss_weight=0.25),
        TaskSpec("liked", kind="binary", loss_weight=3.0),
    ]
    model = MultiTaskModel(
        tasks, movielens.feature_specs, "shared_bottom", {"bottom_units": (16,)},
        retrieval=_retrieval(movielens, loss_weight=0.5),
    )  # fmt: skip
    batch = next(iter(_dataset(movielens.train, 128, 128)))
    total = float(model.compute_loss(batch, training=False))
    losses = {name: float(tracker.result()) for name, tracker in model.loss_trackers.items()}
    expected = 0.25 * losses["rating"] + 3.0 * losses["liked"] + 0.5 * losses["retrieval"]
    np.testing.assert_allclose(total, expected, rtol=1e-5)


@needs_keras_2
@pytest.mark.parametrize(
    "architecture, options",
    [
        ("mmoe", {"num_experts": 2}),
        ("omoe", {"num_experts": 2}),
        ("shared_bottom", {"bottom_units": (8,)}),
        ("ple", {"num_levels": 1, "num_task_experts": 1, "num_shared_experts": 1}),
    ],
)
def test_architectures_train(movielens, architecture, options):
    from mtl_layers.tfrs import MultiTaskModel

    model = MultiTaskModel(movielens.tasks, movielens.feature_specs, architecture, options)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(_dataset(movielens.train, 512, 256), epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][-1])
    assert "rating_rmse" in history
    assert "liked_auc" in history


@needs_keras_2
def test_mose_with_sequence_sample_weights():
    from mtl_layers.tfrs import MultiTaskModel

    tasks = [TaskSpec("click"), TaskSpec("dwell", kind="regression")]
    model = MultiTaskModel(tasks, 3, "mose", {"num_experts": 2, "expert_units": 4, "bottom_units": 4})
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    rng = np.random.default_rng(0)
    sequence = rng.normal(size=(32, 5, 3)).astype("float32")
    mask = np.ones((32, 5), dtype=bool)
    mask[:, 4] = False
    labels = {"click": (rng.random((32, 5)) > 0.5).astype("float32"), "dwell": rng.random((32, 5))}
    weights = {name: mask.astype("float32") for name in labels}
    dataset = tf.data.Dataset.from_tensor_slices(
        ({"sequence": sequence, "mask": mask}, labels, weights)
    ).batch(16)
    history = model.fit(dataset, epochs=1, verbose=0).history
    assert np.isfinite(history["click_loss"][-1])
    assert np.isfinite(history["dwell_rmse"][-1])


@needs_keras_2
def test_export_serves_every_task(trained, movielens, tmp_path):
    model, _, _ = trained
    examples = {name: values[:16] for name, values in movielens.test.features.items()}
    path = mtl.export.export_saved_model(model, tmp_path / "movielens", warmup_examples=examples)
    loaded = tf.saved_model.load(str(path))
    signature = loaded.signatures["serving_default"]
    outputs = signature(**{name: tf.constant(values) for name, values in examples.items()})
    assert sorted(outputs) == ["liked", "rating", "retrieval_score"]
    expected = model(examples)
    for name in ("liked", "rating", "retrieval_score"):
        np.testing.assert_allclose(outputs[name].numpy(), expected[name].numpy(), rtol=1e-5, atol=1e-6)
    inputs = signature.structured_input_signature[1]
    assert inputs["user_id"].dtype == tf.int64
    assert inputs["user_occupation"].dtype == tf.string
    assert inputs["user_age"].dtype == tf.float32
    assert "rating" not in inputs


@needs_keras_2
def test_invalid_configuration_rejected(movielens):
    from mtl_layers.tfrs import MultiTaskModel, RetrievalSpec

    with pytest.raises(ValueError, match="`architecture` must be one of"):
        MultiTaskModel(movielens.tasks, movielens.feature_specs, architecture="transformer")
    with pytest.raises(ValueError, match=r"features \['user_city'\]"):
        MultiTaskModel(
            movielens.tasks,
            movielens.feature_specs,
            retrieval=RetrievalSpec(query_features=("user_city",), candidate_features=("movie_id",)),
        )
    with pytest.raises(ValueError, match="must both name at least one feature"):
        RetrievalSpec(query_features=("user_id",))
    with pytest.raises(ValueError, match="`embedding_dim` must be an integer >= 1"):
        RetrievalSpec(query_features=("user_id",), candidate_features=("movie_id",), embedding_dim=0)
    with pytest.raises(ValueError, match="No labels for the tasks \\['liked'\\]"):
        model = MultiTaskModel(movielens.tasks, movielens.feature_specs, "shared_bottom")
        features = {name: values[:4] for name, values in movielens.train.features.items()}
        model.compute_loss((features, {"rating": movielens.train.labels["rating"][:4]}))
