"""Two sequential regression tasks with controlled task correlation and source sparsity.

This extends the two-task generator of Ma et al. (KDD 2018, `mmoe.py` in this package)
over time, for the setting of Qin et al., "Multitask Mixture of Sequential Experts for
User Activity Streams", KDD 2020: activity streams from several input sources, some of
them sparse, and two tasks predicted at every step.

For each example (a user) and step t = 1..T:

1. Task weights: orthonormal u1, u2 in R^d, w1 = c u1 and w2 = c (p u1 + sqrt(1 - p^2) u2),
   so cos(w1, w2) = p, the task correlation, exactly as in the MMoE generator.
2. Input sources: the d input dimensions are split into `num_sources` contiguous blocks.
   Each step draws x_t ~ N(0, I_d). Source s is observed at a step with probability
   q_s = 1 - sparsity_s, independently per example and step; an unobserved source is
   all zeros. An observed sparse source is scaled by 1 / sqrt(q_s), so its expected
   contribution to the label variance does not depend on its sparsity: sparse sources are
   rare but informative events. The observed inputs are x~_t.
3. Activity state: z_t = a z_{t-1} + sqrt(1 - a^2) x~_t with z_0 = 0 and memory a in
   [0, 1). The state summarises the stream, so the labels depend on the history.
4. Labels: y_{k,t} = w_k^T z_t + sum_{i=1..m} sin(alpha_i w_k^T z_t + beta_i) + eps_{k,t},
   the MMoE label function applied to the state, with alpha_i, beta_i ~ N(0, 1) shared
   by both tasks and eps ~ N(0, noise_stddev^2).

The model receives x~_t and, by default, one 0/1 indicator per source that marks whether the
source was observed at the step. Sequence lengths are uniform in
[`min_length`, `max_length`], and rows are padded to `max_length` on the right or the left.
Padded steps have zero features and zero labels and are False in the mask.
"""

import dataclasses
import math
import numbers
from typing import Dict, Optional, Sequence, Union

import numpy as np

from mtl_layers.datasets.synthetic.mmoe import clean_labels

TASK_NAMES = ("task_1", "task_2")


@dataclasses.dataclass(frozen=True)
class SequentialRegressionParameters:
    """The parameters that generated one `sequential_regression` data set.

    Attributes:
        weights: `(2, input_dim)` float64 task weights w1, w2.
        alphas: `(num_sinusoids,)` float64 frequencies.
        betas: `(num_sinusoids,)` float64 phases.
        source_of_feature: `(input_dim,)` int array, the source of each input dimension.
        sparsity: `(num_sources,)` float64 probability that a source is missing at a step.
        states: `(num_examples, max_length, input_dim)` float64 activity states z_t, zero
            at padded steps.
        lengths: `(num_examples,)` int array of sequence lengths.
        correlation: The requested cosine similarity p of w1 and w2.
        memory: The state memory a.
        seed: The seed of the random draws, or None.
    """

    weights: np.ndarray
    alphas: np.ndarray
    betas: np.ndarray
    source_of_feature: np.ndarray
    sparsity: np.ndarray
    states: np.ndarray
    lengths: np.ndarray
    correlation: float
    memory: float
    seed: Optional[int]


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}. Received: {name}={value!r}")
    return int(value)


def _check_real(name, value, low, high, high_inclusive):
    inside = value <= high if high_inclusive else value < high
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (low <= value and inside):
        bracket = "]" if high_inclusive else ")"
        raise ValueError(
            f"`{name}` must be a number in [{low}, {high}{bracket}. Received: {name}={value!r}"
        )
    return float(value)


def _sparsity_per_source(sparsity, num_sources):
    if isinstance(sparsity, numbers.Real) and not isinstance(sparsity, bool):
        values = [float(sparsity)] * num_sources
    else:
        values = list(sparsity)
        if len(values) != num_sources:
            raise ValueError(
                "`sparsity` must be one number or one number per source. Received: "
                f"{len(values)} values for num_sources={num_sources}."
            )
    for value in values:
        _check_real("sparsity", value, 0.0, 1.0, high_inclusive=False)
    return np.asarray(values, np.float64)


def sequential_regression(
    num_examples: int,
    correlation: float,
    sparsity: Union[float, Sequence[float]] = 0.0,
    num_sources: int = 4,
    input_dim: int = 16,
    min_length: int = 5,
    max_length: int = 20,
    memory: float = 0.7,
    num_sinusoids: int = 10,
    scale: float = 1.0,
    noise_stddev: float = 0.1,
    padding: str = "right",
    source_indicators: bool = True,
    seed: Optional[int] = None,
):
    """Generate two per-step regression tasks over variable-length input streams.

    See the module docstring for the generating process. All draws come from one
    `numpy.random.Generator` seeded with `seed`.

    Args:
        num_examples: Number of sequences, an integer >= 1.
        correlation: Cosine similarity p of the task weights, in [-1, 1].
        sparsity: Probability in [0, 1) that a source is missing at a step: one number
            for every source, or one per source (for example `[0, 0, 0.9, 0.9]`).
        num_sources: Number of input sources, an integer in [1, input_dim].
        input_dim: Input dimension d, an integer >= 2.
        min_length: Shortest sequence, an integer >= 1.
        max_length: Longest sequence and the padded length, >= `min_length`.
        memory: State memory a in [0, 1); 0 makes each step independent.
        num_sinusoids: Number m of sinusoids in the label function.
        scale: Norm c of the task weights, > 0.
        noise_stddev: Standard deviation of the label noise, >= 0.
        padding: `"right"` or `"left"`.
        source_indicators: Append one 0/1 column per source that marks observed sources.
        seed: Seed of all random draws, or None.

    Returns:
        `(data, parameters)`. `data` is a dict with `"sequence"` float32
        `(num_examples, max_length, input_dim [+ num_sources])`, `"mask"` bool
        `(num_examples, max_length)` and `"labels"`, a dict of float32
        `(num_examples, max_length)` arrays keyed `"task_1"` and `"task_2"`.
        `parameters` is a `SequentialRegressionParameters`.

    Example:

    >>> data, params = sequential_regression(100, correlation=0.5, sparsity=[0, 0.9], num_sources=2, seed=0)
    >>> data["sequence"].shape, data["labels"]["task_1"].shape
    ((100, 20, 18), (100, 20))
    """
    num_examples = _check_int("num_examples", num_examples, 1)
    input_dim = _check_int("input_dim", input_dim, 2)
    num_sources = _check_int("num_sources", num_sources, 1)
    if num_sources > input_dim:
        raise ValueError(
            "`num_sources` must be at most `input_dim`, because every source needs at least "
            f"one input dimension. Received: num_sources={num_sources}, input_dim={input_dim}."
        )
    min_length = _check_int("min_length", min_length, 1)
    max_length = _check_int("max_length", max_length, 1)
    if max_length < min_length:
        raise ValueError(
            "`max_length` must be >= `min_length`, because sequences have between "
            f"`min_length` and `max_length` steps. Received: min_length={min_length}, "
            f"max_length={max_length}. Raise `max_length` or lower `min_length`."
        )
    num_sinusoids = _check_int("num_sinusoids", num_sinusoids, 0)
    correlation = _check_real("correlation", correlation, -1.0, 1.0, high_inclusive=True)
    memory = _check_real("memory", memory, 0.0, 1.0, high_inclusive=False)
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
    if padding not in ("right", "left"):
        raise ValueError(f"`padding` must be 'right' or 'left'. Received: padding={padding!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0):
        raise ValueError(f"`seed` must be None or an integer >= 0. Received: seed={seed!r}")
    sparsity = _sparsity_per_source(sparsity, num_sources)
    rng = np.random.default_rng(seed)

    # Task weights with cosine similarity `correlation`, as in the MMoE generator.
    orthonormal, _ = np.linalg.qr(rng.standard_normal((input_dim, 2)))
    u1, u2 = orthonormal[:, 0], orthonormal[:, 1]
    weights = scale * np.stack([u1, correlation * u1 + math.sqrt(1.0 - correlation**2) * u2])
    alphas = rng.standard_normal(num_sinusoids)
    betas = rng.standard_normal(num_sinusoids)

    # Sources are contiguous blocks of input dimensions of nearly equal size.
    source_of_feature = np.repeat(
        np.arange(num_sources), np.diff(np.linspace(0, input_dim, num_sources + 1).round().astype(int))
    )
    lengths = rng.integers(min_length, max_length + 1, size=num_examples)

    # Draw every step of every sequence (padding is applied afterwards).
    raw = rng.standard_normal((num_examples, max_length, input_dim))
    observed = rng.random((num_examples, max_length, num_sources)) >= sparsity
    source_scale = 1.0 / np.sqrt(1.0 - sparsity)
    inputs = raw * (observed * source_scale)[:, :, source_of_feature]

    # z_t = a z_{t-1} + sqrt(1 - a^2) x~_t over each sequence's own steps 0..length-1.
    states = np.zeros_like(inputs)
    state = np.zeros((num_examples, input_dim))
    innovation_scale = math.sqrt(1.0 - memory**2)
    for t in range(max_length):
        state = memory * state + innovation_scale * inputs[:, t]
        states[:, t] = state
    noise = noise_stddev * rng.standard_normal((num_examples, max_length, 2))
    labels = clean_labels(states.reshape(-1, input_dim), weights, alphas, betas)
    labels = labels.reshape(num_examples, max_length, 2) + noise

    valid = np.arange(max_length)[None, :] < lengths[:, None]
    features = inputs
    if source_indicators:
        features = np.concatenate([inputs, observed.astype(np.float64)], axis=-1)
    features = np.where(valid[:, :, None], features, 0.0)
    labels = np.where(valid[:, :, None], labels, 0.0)
    states = np.where(valid[:, :, None], states, 0.0)
    if padding == "left":
        # Shift each row right by its padding so the valid steps end at the last position.
        shifts = max_length - lengths
        order = (np.arange(max_length)[None, :] - shifts[:, None]) % max_length
        rows = np.arange(num_examples)[:, None]
        features, labels, states = features[rows, order], labels[rows, order], states[rows, order]
        valid = valid[rows, order]

    parameters = SequentialRegressionParameters(
        weights=weights,
        alphas=alphas,
        betas=betas,
        source_of_feature=source_of_feature,
        sparsity=sparsity,
        states=states,
        lengths=lengths,
        correlation=correlation,
        memory=memory,
        seed=None if seed is None else int(seed),
    )
    label_dict: Dict[str, np.ndarray] = {
        name: np.ascontiguousarray(labels[:, :, index], dtype=np.float32)
        for index, name in enumerate(TASK_NAMES)
    }
    data = {"sequence": features.astype(np.float32), "mask": valid, "labels": label_dict}
    return data, parameters
