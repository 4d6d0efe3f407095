"""Exact evaluation metrics computed with NumPy, independent of Keras's approximations."""

import numpy as np


def roc_auc(labels, scores) -> float:
    """Return the exact area under the ROC curve of binary `labels` and `scores`.

    Uses the Mann-Whitney rank statistic with average ranks for tied scores, which equals
    the trapezoidal area under the ROC curve (as `sklearn.metrics.roc_auc_score`).
    Keras's `AUC` metric instead interpolates over a fixed number of thresholds.

    Raises:
        ValueError: When the shapes differ, the scores are not finite, or `labels` does
            not contain both classes.
    """
    labels = np.asarray(labels).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if labels.shape != scores.shape:
        raise ValueError(
            f"`labels` and `scores` must have the same number of values. Received: "
            f"{labels.shape[0]} labels and {scores.shape[0]} scores."
        )
    if not np.all(np.isfinite(scores)):
        raise ValueError("`scores` contains NaN or infinite values; the model diverged.")
    positives = labels > 0.5
    num_positive = int(positives.sum())
    num_negative = labels.size - num_positive
    if num_positive == 0 or num_negative == 0:
        raise ValueError(
            "ROC AUC needs both classes in `labels`. Received: "
            f"{num_positive} positives and {num_negative} negatives."
        )
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(scores.size, dtype=np.float64)
    # Average rank (1-based) for each run of tied scores.
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [scores.size]])
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    rank_sum = ranks[positives].sum()
    return float((rank_sum - num_positive * (num_positive + 1) / 2.0) / (num_positive * num_negative))
