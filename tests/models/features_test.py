"""Tests of FeatureSpec inputs and the preprocessed (lookup-free) training path."""

import numpy as np
import pytest

from mtl_layers.compat import keras
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
