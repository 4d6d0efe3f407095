"""Argument checks shared by the layers, with messages in the Keras style."""

import numbers

import numpy as np


def check_positive_int(name: str, value) -> int:
    """Return `value` as an int, or raise ValueError unless it is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{name}` must be an integer >= 1. Received: {name}={value!r}")
    return int(value)


def check_rate(name: str, value) -> float:
    """Return `value` as a float, or raise ValueError unless 0 <= value < 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value < 1.0:
        raise ValueError(
            f"`{name}` must be a float in the range [0, 1). Received: {name}={value!r}"
        )
    return float(value)


def check_non_negative(name: str, value) -> float:
    """Return `value` as a float, or raise ValueError unless it is a finite number >= 0."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not value >= 0.0
        or value == float("inf")
    ):
        raise ValueError(f"`{name}` must be a finite number >= 0. Received: {name}={value!r}")
    return float(value)


def check_bool(name: str, value) -> bool:
    """Return `value` as a bool, or raise ValueError unless it is True or False.

    A string such as "False" is rejected: `bool("False")` would be True.
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise ValueError(f"`{name}` must be True or False. Received: {name}={value!r}")


def check_auto_or_bool(name: str, value):
    """Return `value`, or raise ValueError unless it is "auto", True or False."""
    if (isinstance(value, str) and value == "auto") or isinstance(value, bool):
        return value
    raise ValueError(f"`{name}` must be 'auto', True or False. Received: {name}={value!r}")


def check_units(name: str, value) -> tuple:
    """Return `value` as a tuple of ints >= 1; an int means one layer."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        units = (value,)
    elif isinstance(value, (list, tuple)):
        units = tuple(value)
    else:
        raise ValueError(
            f"`{name}` must be an integer or a non-empty list of integers >= 1. "
            f"Received: {name}={value!r}"
        )
    if not units:
        raise ValueError(
            f"`{name}` must be an integer or a non-empty list of integers >= 1. "
            f"Received: {name}={value!r}"
        )
    for size in units:
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
            raise ValueError(
                f"Every entry of `{name}` must be an integer >= 1. Received: {name}={value!r}"
            )
    return tuple(int(size) for size in units)


def check_feature_count(layer, inputs, features: int, argument: str = "inputs") -> None:
    """Raise a ValueError when the last axis of `inputs` is not the built `features`.

    Keras 3 checks the layer's InputSpec before `call`. tf_keras skips that check when a
    built layer is called on a symbolic input, and the call then traces wrong shapes
    silently (or fails inside a matrix product), so `call` checks the static size itself.
    Arguments other than the first, such as `gate_inputs`, have no InputSpec in either
    mode; without this check their error would name an inner layer.
    """
    received = inputs.shape[-1]
    if received is not None and received != features:
        raise ValueError(
            f"{type(layer).__name__} {layer.name!r} was built for {argument} with {features} "
            f"features on the last axis. Received: {argument} shape={tuple(inputs.shape)}. "
            f"Pass {argument} with {features} features, or use a new layer for {received} "
            "features."
        )
