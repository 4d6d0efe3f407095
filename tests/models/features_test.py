"""Tests of FeatureSpec inputs and the preprocessed (lookup-free) training path."""

import numpy as np
import pytest

from mtl_layers.compat import keras, ops
from mtl_layers.models import FeatureSpec, build_feature_inputs, mmoe, preprocess_features
from mtl_layers.tasks import TaskSpec

FEATURES = (
    FeatureSpec("age", "numeric", mean=40.0, variance=100.0),
    FeatureSpec("job", "categorical", vocabulary=("clerk", "nurse", "pilot"), embedding_dim=3),
    FeatureSpec("region", "integer_categorical", vocabulary=(1, 2, 3, 7)),
)
RAW = {
    "age": np.array([25.0, 40.0, 61.5, 33.0], np.float32),
    "job": np.array(["nurse", "pilot", "unknown", "clerk"], dtype=object),
    "region": np.array([7, 1, 5, 3], np.int64),
}


def test_preprocess_features_values():
    encoded = preprocess_features(FEATURES, RAW)

    np.testing.assert_allclose(encoded["age"], [-1.5, 0.0, 2.15, -0.7], rtol=1e-6)
    assert encoded["age"].dtype == np.float32
    np.testing.assert_array_equal(encoded["job"], [2, 3, 0, 1])
    np.testing.assert_array_equal(encoded["region"], [4, 1, 0, 3])
    assert encoded["job"].dtype == np.int32


def test_preprocess_features_matches_lookup_layers():
    keras.utils.set_random_seed(3)
    raw_model = keras.Model(*build_feature_inputs(FEATURES))
    keras.utils.set_random_seed(3)
    pre_model = keras.Model(*build_feature_inputs(FEATURES, preprocessed=True))

    expected = raw_model.predict_on_batch(RAW)
    actual = pre_model.predict_on_batch(preprocess_features(FEATURES, RAW))

    np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-6)


def test_preprocessed_mmoe_matches_raw_mmoe():
    tasks = [TaskSpec("click", kind="binary"), TaskSpec("spend", kind="regression")]
    keras.utils.set_random_seed(0)
    raw_model = mmoe(tasks, list(FEATURES), num_experts=3, expert_units=4)
    keras.utils.set_random_seed(0)
    inputs, encoded = build_feature_inputs(FEATURES, preprocessed=True)
    pre_model = mmoe(tasks, encoded, num_experts=3, expert_units=4, model_inputs=inputs)

    expected = raw_model.predict_on_batch(RAW)
    actual = pre_model.predict_on_batch(preprocess_features(FEATURES, RAW))

    for task in ("click", "spend"):
        np.testing.assert_allclose(actual[task], expected[task], rtol=1e-5, atol=1e-6)


def test_preprocess_features_bytes_values():
    raw = dict(RAW, job=np.array([b"nurse", b"pilot", b"x", b"clerk"]))

    encoded = preprocess_features(FEATURES, raw)

    np.testing.assert_array_equal(encoded["job"], [2, 3, 0, 1])


@pytest.mark.parametrize(
    "values, message",
    [
        ({"age": RAW["age"], "job": RAW["job"]}, r"no column for the features \['region'\]"),
        (dict(RAW, age=np.array([1.0, np.nan, 2.0, 3.0])), r"'age' contains 1 NaN or infinite values, the first at row 1"),
        (dict(RAW, job=RAW["job"][:3]), "same length"),
    ],
)
def test_preprocess_features_invalid(values, message):
    with pytest.raises(ValueError, match=message):
        preprocess_features(FEATURES, values)


def test_build_feature_inputs_rejects_non_bool():
    with pytest.raises(ValueError, match="`preprocessed` must be True or False"):
        build_feature_inputs(FEATURES, preprocessed="yes")


def test_preprocessed_weights_load_into_raw_model():
    tasks = [TaskSpec("click", kind="binary")]
    raw_model = mmoe(tasks, list(FEATURES), num_experts=2, expert_units=3)
    inputs, encoded = build_feature_inputs(FEATURES, preprocessed=True)
    pre_model = mmoe(tasks, encoded, num_experts=2, expert_units=3, model_inputs=inputs)
    pre_model.set_weights([weight + 0.05 for weight in pre_model.get_weights()])

    raw_model.set_weights(pre_model.get_weights())

    expected = pre_model.predict_on_batch(preprocess_features(FEATURES, RAW))["click"]
    actual = raw_model.predict_on_batch(RAW)["click"]
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


PACKABLE = (
    FeatureSpec("age", "numeric", mean=40.0, variance=100.0),
    FeatureSpec("job", "categorical", vocabulary=("clerk", "nurse", "pilot")),
    FeatureSpec("hours", "numeric", mean=38.0, variance=16.0),
    FeatureSpec("region", "integer_categorical", vocabulary=(1, 2, 3, 7)),
)
PACKABLE_RAW = dict(RAW, hours=np.array([40.0, 20.0, 50.0, 38.0], np.float32))


def test_preprocess_features_packed_layout():
    packed = preprocess_features(PACKABLE, PACKABLE_RAW, packed=True)
    columns = preprocess_features(PACKABLE, PACKABLE_RAW)

    assert sorted(packed) == ["categorical_ids", "numeric_features"]
    np.testing.assert_array_equal(packed["numeric_features"], np.stack([columns["age"], columns["hours"]], 1))
    np.testing.assert_array_equal(packed["categorical_ids"], [[2, 4], [3, 1], [0, 0], [1, 3]])
    assert packed["numeric_features"].dtype == np.float32
    assert packed["categorical_ids"].dtype == np.int32


def test_packed_encoding_matches_per_feature_embeddings():
    per_feature_model = keras.Model(*build_feature_inputs(PACKABLE, preprocessed=True))
    inputs, encoded = build_feature_inputs(PACKABLE, preprocessed=True, packed=True)
    packed_model = keras.Model(inputs, encoded)
    assert sorted(inputs) == ["categorical_ids", "numeric_features"]

    # Copy the per-feature tables into the packed table, feature after feature.
    job_table = per_feature_model.get_layer("job_embedding").get_weights()[0]
    region_table = per_feature_model.get_layer("region_embedding").get_weights()[0]
    packed_model.get_layer("categorical_embedding").set_weights([np.concatenate([job_table, region_table])])

    expected = per_feature_model.predict_on_batch(preprocess_features(PACKABLE, PACKABLE_RAW))
    actual = packed_model.predict_on_batch(preprocess_features(PACKABLE, PACKABLE_RAW, packed=True))
    # Packed order: the numeric features (age, hours), then the embeddings (job, region).
    reordered = np.concatenate([expected[:, [0]], expected[:, [5]], expected[:, 1:5], expected[:, 6:]], axis=1)
    np.testing.assert_allclose(actual, reordered, rtol=1e-6, atol=1e-7)


def test_packed_mmoe_matches_raw_model():
    tasks = [TaskSpec("click", kind="binary"), TaskSpec("spend", kind="regression")]
    keras.utils.set_random_seed(5)
    raw_inputs, raw_encoded = build_feature_inputs(PACKABLE, packed=True)
    raw_model = mmoe(tasks, raw_encoded, num_experts=3, expert_units=4, model_inputs=raw_inputs)
    keras.utils.set_random_seed(5)
    inputs, encoded = build_feature_inputs(PACKABLE, preprocessed=True, packed=True)
    pre_model = mmoe(tasks, encoded, num_experts=3, expert_units=4, model_inputs=inputs)

    assert sorted(raw_inputs) == ["age", "hours", "job", "region"]
    packed_values = preprocess_features(PACKABLE, PACKABLE_RAW, packed=True)
    for task in ("click", "spend"):
        np.testing.assert_allclose(
            pre_model.predict_on_batch(packed_values)[task],
            raw_model.predict_on_batch(PACKABLE_RAW)[task],
            rtol=1e-5,
            atol=1e-6,
        )

    # Weights trained on packed preprocessed inputs serve raw inputs.
    pre_model.set_weights([weight + 0.05 for weight in pre_model.get_weights()])
    raw_model.set_weights(pre_model.get_weights())
    np.testing.assert_allclose(
        raw_model.predict_on_batch(PACKABLE_RAW)["click"],
        pre_model.predict_on_batch(packed_values)["click"],
        rtol=1e-5,
        atol=1e-6,
    )


def test_packed_needs_one_embedding_dim():
    with pytest.raises(ValueError, match=r"same `embedding_dim`. Received: \{'job': 3, 'region': 4\}"):
        build_feature_inputs(FEATURES, packed=True)
    with pytest.raises(ValueError, match="same `embedding_dim`"):
        preprocess_features(FEATURES, RAW, packed=True)
    with pytest.raises(ValueError, match="`packed` must be True or False. Received: packed=1"):
        build_feature_inputs(PACKABLE, packed=1)


def test_packed_with_only_numeric_or_only_categorical_features():
    numeric_only = PACKABLE[::2]
    inputs, encoded = build_feature_inputs(numeric_only, preprocessed=True, packed=True)
    assert list(inputs) == ["numeric_features"]
    assert tuple(encoded.shape) == (None, 2)
    assert list(preprocess_features(numeric_only, PACKABLE_RAW, packed=True)) == ["numeric_features"]

    categorical_only = PACKABLE[1::2]
    inputs, encoded = build_feature_inputs(categorical_only, packed=True)
    assert sorted(inputs) == ["job", "region"]
    assert tuple(encoded.shape) == (None, 8)


def test_packed_raw_model_exports_and_serves_raw_features(tmp_path):
    import tensorflow as tf

    import mtl_layers as mtl

    tasks = [TaskSpec("click", kind="binary")]
    inputs, encoded = build_feature_inputs(PACKABLE, packed=True)
    model = mmoe(tasks, encoded, num_experts=2, expert_units=3, model_inputs=inputs)
    expected = model.predict_on_batch(PACKABLE_RAW)["click"]

    path = mtl.export.export_saved_model(model, tmp_path / "packed")
    serving = tf.saved_model.load(str(path)).signatures["serving_default"]
    raw = {name: tf.constant(values) for name, values in PACKABLE_RAW.items()}
    raw["job"] = tf.constant(PACKABLE_RAW["job"].astype(str))
    actual = serving(**raw)["click"].numpy()

    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("packed", [False, True])
def test_embedding_initializer_and_regularizer_reach_every_table(packed):
    inputs, encoded = build_feature_inputs(
        PACKABLE,
        packed=packed,
        embeddings_initializer=keras.initializers.RandomNormal(stddev=1e-4, seed=7),
        embeddings_regularizer=keras.regularizers.L2(1e-5),
    )
    model = keras.Model(inputs, encoded)

    names = ["categorical_embedding"] if packed else ["job_embedding", "region_embedding"]
    tables = [model.get_layer(name).weights[0] for name in names]
    for table in tables:
        values = ops.convert_to_numpy(table)
        assert 0 < values.std() < 3e-4
    if not packed:
        # Seeded tables get different seeds, so they do not start equal.
        first, second = (ops.convert_to_numpy(table) for table in tables)
        assert not np.allclose(first[:4, :4], second[:4, :4])
    assert len(model.losses) == len(tables)


@pytest.mark.parametrize(
    "spec, column, message",
    [
        (FeatureSpec("code", "categorical", vocabulary=("1", "2")), np.array([1, 2]),
         r"'code' must contain strings.*dtype int64"),
        (FeatureSpec("code", "categorical", vocabulary=("1", "2")), np.array(["1", 2], dtype=object),
         "mixed types"),
        (FeatureSpec("code", "categorical", vocabulary=("1.0",)), np.array([1.0, 2.0]),
         "must contain strings"),
        (FeatureSpec("code", "integer_categorical", vocabulary=(1, 2)), np.array(["1", "2"]),
         r"'code' must contain integers.*astype\(np.int64\)"),
        (FeatureSpec("code", "integer_categorical", vocabulary=(1, 2)), np.array([1.0, 2.0]),
         "must contain integers"),
    ],
)  # fmt: skip
def test_preprocess_features_wrong_value_type(spec, column, message):
    with pytest.raises(ValueError, match=message):
        preprocess_features([spec], {"code": column})


def test_preprocess_features_object_bytes_values():
    raw = dict(RAW, job=np.array([b"nurse", b"pilot", b"x", b"clerk"], dtype=object))

    encoded = preprocess_features(FEATURES, raw)

    np.testing.assert_array_equal(encoded["job"], [2, 3, 0, 1])


def test_preprocess_features_object_integer_values():
    raw = dict(RAW, region=np.array([7, 1, 5, 3], dtype=object))

    encoded = preprocess_features(FEATURES, raw)

    np.testing.assert_array_equal(encoded["region"], [4, 1, 0, 3])


@pytest.mark.parametrize("variance", [0, 0.0, -1.0])
def test_feature_spec_rejects_non_positive_variance(variance):
    with pytest.raises(ValueError, match="`variance` finite and > 0"):
        FeatureSpec("age", "numeric", variance=variance)


@pytest.mark.parametrize("vocabulary", ["uv", b"uv"])
def test_feature_spec_rejects_string_vocabulary(vocabulary):
    with pytest.raises(ValueError, match="not one string"):
        FeatureSpec("job", "categorical", vocabulary=vocabulary)


@pytest.mark.parametrize(
    "kind, vocabulary, message",
    [
        ("categorical", (1, 2), r"must contain strings.*the first 1 \(int\)"),
        ("integer_categorical", ("1", "2"), r"must contain integers.*the first '1' \(str\)"),
        ("integer_categorical", (1, True), r"the first True \(bool\)"),
    ],
)  # fmt: skip
def test_feature_spec_rejects_vocabulary_type(kind, vocabulary, message):
    with pytest.raises(ValueError, match=message):
        FeatureSpec("code", kind, vocabulary=vocabulary)
