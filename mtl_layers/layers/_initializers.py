"""Independent initial weights for a stack of experts."""

import random

from mtl_layers.compat import keras, ops


def stacked_initializer(initializer, num_experts: int, axis: int = 0):
    """Return an initializer that draws each expert's slice independently.

    Both Keras 3 and `tf_keras` return the same values from repeated calls of an
    initializer that has an integer seed, and Keras 3 also fixes a seed at construction
    for an unseeded initializer. Calling one initializer once per expert would then start
    every expert as an exact copy, and identical experts receive identical gradients, so
    they never specialise. This wrapper gives expert `e` the seed `base_seed + e`, where
    `base_seed` is the initializer's own integer seed or, when it has none, a number drawn
    from Python's `random` module (seeded by `keras.utils.set_random_seed`).

    The returned callable takes the shape of the whole stack, which has the expert axis
    at `axis`, and calls the initializer once per expert with that axis removed, so
    fan-in and fan-out scaling (Glorot, He) use one expert's matrix, as they would for a
    single Dense layer.
    """
    config = initializer.get_config()
    seed = config.get("seed", None)
    if "seed" in config and not isinstance(seed, int):
        seed = random.randint(0, 2**31 - 1 - num_experts)

    def initialize(shape, dtype=None):
        expert_shape = tuple(shape[:axis]) + tuple(shape[axis + 1 :])
        slices = []
        for expert_index in range(num_experts):
            if seed is None:
                expert_initializer = initializer
            else:
                expert_initializer = initializer.__class__.from_config(
                    {**config, "seed": seed + expert_index}
                )
            slices.append(expert_initializer(expert_shape, dtype=dtype))
        return ops.stack(slices, axis=axis)

    return initialize


def get_initializer(identifier):
    """Return a Keras initializer object of the active Keras from a name, dict or object."""
    return keras.initializers.get(identifier)


def copy_initializer(initializer, seed_offset: int = 0):
    """Return a new copy of `initializer`, with `seed_offset` added to its seed when seeded.

    Repeated calls of one initializer object can return the same values (see
    `stacked_initializer`), so every weight that must start different needs its own
    copy, and seeded copies need different seeds.
    """
    config = initializer.get_config()
    if isinstance(config.get("seed"), int):
        config["seed"] += seed_offset
    return initializer.__class__.from_config(config)
