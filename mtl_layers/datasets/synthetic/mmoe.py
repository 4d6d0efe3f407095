"""Two regression tasks with a controlled task correlation, after Ma et al. (KDD 2018).

The generator follows Sec. 3.2 of Ma et al., "Modeling Task Relationships in Multi-task
Learning with Multi-gate Mixture-of-Experts", KDD 2018:

1. Draw two orthonormal vectors u1, u2 in R^d.
2. For a scale c and a correlation p in [-1, 1], set w1 = c u1 and
   w2 = c (p u1 + sqrt(1 - p^2) u2), so that cos(w1, w2) = p.
3. Draw inputs x ~ N(0, I_d).
4. Set y_k = w_k^T x + sum_{i=1..m} sin(alpha_i w_k^T x + beta_i) + eps_k, with the same
   alpha_i, beta_i for both tasks and eps_k ~ N(0, noise_stddev^2).

The label correlation falls as p falls, but it is not equal to p: the sinusoids bend it.

Defaults and where they come from:
* `num_sinusoids=10`, `scale=1.0`: m = 10 and c = 1, as in the public re-implementation
  at https://e-com-net.com/article/1596565145599901696.htm (which uses d = 512).
* `input_dim=100`: this library's choice, small enough for CPU sweeps.
* alpha_i, beta_i ~ N(0, 1): the distribution of that re-implementation. The paper's
  distribution of these parameters is not known to this module.
* `noise_stddev=0.1`: the paper writes eps ~ N(0, 0.01); read as (mean, variance), that
  is a standard deviation of 0.1.

NOTE: the paper's data set size, train/test split and input dimension were not checked
against the paper's text; `examples/mmoe_synthetic.py` states the sizes it uses.
"""

import dataclasses
import math
import numbers
from typing import Dict, Optional, Tuple

import numpy as np

TASK_NAMES = ("task_1", "task_2")


@dataclasses.dataclass(frozen=True)
class MmoeRegressionParameters:
    """The parameters that generated one `mmoe_regression` data set.

    Attributes:
        weights: `(2, input_dim)` float64 array, rows w1 and w2.
        alphas: `(num_sinusoids,)` float64 frequencies alpha_i, shared by both tasks.
        betas: `(num_sinusoids,)` float64 phases beta_i, shared by both tasks.
        noise: `(num_examples, 2)` float64 label noise eps, column k for task k.
        correlation: The requested cosine similarity p of w1 and w2.
        scale: The norm c of w1 and w2.
        seed: The seed of the random draws, or None.
    """

    weights: np.ndarray
    alphas: np.ndarray
    betas: np.ndarray
    noise: np.ndarray
    correlation: float
    scale: float
    seed: Optional[int]


def clean_labels(features, weights, alphas, betas) -> np.ndarray:
    """Return the noise-free labels `(num_examples, 2)` in float64.

    y_k = w_k^T x + sum_i sin(alpha_i w_k^T x + beta_i) for the rows `x` of `features`.
    """
    projections = np.asarray(features, np.float64) @ np.asarray(weights, np.float64).T
    # (num_examples, 2, 1) * (num_sinusoids,) broadcasts to one sinusoid per column.
    phases = projections[:, :, None] * np.asarray(alphas)[None, None, :] + np.asarray(betas)
    return projections + np.sin(phases).sum(axis=-1)


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}. Received: {name}={value!r}")
    return int(value)


def _check_arguments(num_examples, correlation, input_dim, num_sinusoids, scale, noise_stddev, seed):
    _check_int("num_examples", num_examples, 1)
    _check_int("input_dim", input_dim, 2)
    _check_int("num_sinusoids", num_sinusoids, 0)
    if (
        isinstance(correlation, bool)
        or not isinstance(correlation, numbers.Real)
        or not -1.0 <= correlation <= 1.0
    ):
        raise ValueError(
            "`correlation` is the cosine similarity of the two task weight vectors and must "
            f"be a number in [-1, 1]. Received: correlation={correlation!r}"
        )
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not 0 < scale < math.inf:
        raise ValueError(f"`scale` must be a finite number > 0. Received: scale={scale!r}")
    if (
        isinstance(noise_stddev, bool)
        or not isinstance(noise_stddev, numbers.Real)
        or not 0 <= noise_stddev < math.inf
    ):
        raise ValueError(
            f"`noise_stddev` must be a finite number >= 0. Received: noise_stddev={noise_stddev!r}"
        )
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0):
        raise ValueError(f"`seed` must be None or an integer >= 0. Received: seed={seed!r}")


def mmoe_regression(
    num_examples: int,
    correlation: float,
    input_dim: int = 100,
    num_sinusoids: int = 10,
    scale: float = 1.0,
    noise_stddev: float = 0.1,
    seed: Optional[int] = None,
    as_dataset: bool = False,
):
    """Generate two regression tasks whose weight vectors have cosine `correlation`.

    See the module docstring for the generating process and the source of each default.
    All draws come from one `numpy.random.Generator` seeded with `seed`, so the same
    arguments give the same data and parameters.

    Args:
        num_examples: Number of examples, an integer >= 1.
        correlation: Cosine similarity p of w1 and w2, in [-1, 1].
        input_dim: Input dimension d, an integer >= 2 (u1 and u2 must be orthogonal).
        num_sinusoids: Number m of sinusoids added to each label, an integer >= 0.
        scale: Norm c of both weight vectors, > 0.
        noise_stddev: Standard deviation of the label noise, >= 0.
        seed: Seed of all random draws, or None for fresh entropy.
        as_dataset: Return an unbatched `tf.data.Dataset` of `(features, labels)` instead
            of NumPy arrays.

    Returns:
        `(data, parameters)`. `data` is `(features, labels)` with `features` a float32
        array `(num_examples, input_dim)` and `labels` a dict of float32 arrays
        `(num_examples,)` keyed `"task_1"` and `"task_2"`, or the same as a
        `tf.data.Dataset` when `as_dataset` is True. `parameters` is a
        `MmoeRegressionParameters`; `clean_labels(features, parameters.weights,
        parameters.alphas, parameters.betas) + parameters.noise` recomputes the labels.

    Example:

    >>> (x, y), params = mmoe_regression(1000, correlation=0.5, seed=0)
    >>> x.shape, y["task_1"].shape
    ((1000, 100), (1000,))
    >>> round(float(params.weights[0] @ params.weights[1]), 6)
    0.5
    """
    _check_arguments(num_examples, correlation, input_dim, num_sinusoids, scale, noise_stddev, seed)
    rng = np.random.default_rng(seed)

    # Orthonormal u1, u2: the Q factor of a Gaussian (d, 2) matrix.
    orthonormal, _ = np.linalg.qr(rng.standard_normal((input_dim, 2)))
    u1, u2 = orthonormal[:, 0], orthonormal[:, 1]
    w1 = scale * u1
    w2 = scale * (correlation * u1 + math.sqrt(1.0 - correlation**2) * u2)
    weights = np.stack([w1, w2])

    alphas = rng.standard_normal(num_sinusoids)
    betas = rng.standard_normal(num_sinusoids)
    # The labels are computed from the float32 features that are returned, so they
    # recompute exactly from the returned arrays.
    features = rng.standard_normal((num_examples, input_dim)).astype(np.float32)
    noise = noise_stddev * rng.standard_normal((num_examples, 2))
    labels = (clean_labels(features, weights, alphas, betas) + noise).astype(np.float32)

    parameters = MmoeRegressionParameters(
        weights=weights,
        alphas=alphas,
        betas=betas,
        noise=noise,
        correlation=float(correlation),
        scale=float(scale),
        seed=None if seed is None else int(seed),
    )
    label_dict: Dict[str, np.ndarray] = {
        name: np.ascontiguousarray(labels[:, index]) for index, name in enumerate(TASK_NAMES)
    }
    if not as_dataset:
        return (features, label_dict), parameters

    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((features, label_dict)), parameters


def split_examples(features, labels, num_train: int) -> Tuple[Tuple, Tuple]:
    """Split NumPy `(features, labels)` into the first `num_train` examples and the rest."""
    num_examples = features.shape[0]
    if not 1 <= num_train < num_examples:
        raise ValueError(
            f"`num_train` must be in [1, {num_examples - 1}] for {num_examples} examples. "
            f"Received: num_train={num_train!r}"
        )
    train = (features[:num_train], {name: values[:num_train] for name, values in labels.items()})
    rest = (features[num_train:], {name: values[num_train:] for name, values in labels.items()})
    return train, rest
