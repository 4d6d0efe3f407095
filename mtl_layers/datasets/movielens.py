"""MovieLens 100K as per-user, time-ordered activity sequences with two tasks per step.

Each user's ratings (`u.data`) are sorted by time (ties by movie id) and cut into
consecutive windows of `max_length` steps; the last window of a user is padded on the
right. At step t the model sees the movie rated at t and the user's history, and predicts
two tasks for that rating:

* `rating`: the rating, 1 to 5 (regression);
* `liked`: whether the rating is at least 4 (binary).

Per-step inputs: `movie_id` (the GroupLens id, 1..1682, 0 at padded steps) and
`features`, float32 columns named in `FEATURE_NAMES`: the movie's 19 genre flags
(`u.item`), the previous rating of the user divided by 5, whether it was liked, whether
there is a previous rating, and log(1 + days since the previous rating). The previous
rating comes from the user's whole history, so the first step of a later window still
sees it. No input at step t contains the rating at step t.

Users, not ratings, are split into train, validation and test sets, so test users are
unseen. Files come from a folder or from a GroupLens download, and `u.data`, `u.item` and
`u.user` are checked against their pinned SHA-256 digests before use (by
`mtl_layers.tfrs.movielens_data.find_movielens_dir`). MovieLens may not be redistributed
(GroupLens terms), so the package never contains it.
"""

import dataclasses
import math
import numbers
import pathlib
from typing import Dict, List, Optional

import numpy as np

from mtl_layers.datasets import files
from mtl_layers.tasks import TaskSpec
from mtl_layers.tfrs import movielens_data
from mtl_layers.tfrs.movielens_data import GENRES, LIKED_THRESHOLD, find_movielens_dir

NUM_MOVIES = 1682
FEATURE_NAMES = tuple(f"genre_{genre}" for genre in GENRES) + (
    "previous_rating",
    "previous_liked",
    "has_previous",
    "log_days_since_previous",
)
TASK_NAMES = ("rating", "liked")
_SECONDS_PER_DAY = 86400.0


@dataclasses.dataclass
class SequenceSplit:
    """One split of padded sequences.

    Attributes:
        movie_id: `(num_sequences, max_length)` int32, 0 at padded steps.
        features: `(num_sequences, max_length, len(FEATURE_NAMES))` float32.
        mask: `(num_sequences, max_length)` bool, True at valid steps.
        labels: `{"rating": float32, "liked": float32}`, each `(num_sequences, max_length)`,
            0 at padded steps.
        user_id: `(num_sequences,)` int32, the user of each sequence.
    """

    movie_id: np.ndarray
    features: np.ndarray
    mask: np.ndarray
    labels: Dict[str, np.ndarray]
    user_id: np.ndarray

    def inputs(self) -> Dict[str, np.ndarray]:
        """Return the model inputs `{"movie_id", "features", "mask"}`."""
        return {"movie_id": self.movie_id, "features": self.features, "mask": self.mask}

    def __len__(self) -> int:
        return int(self.movie_id.shape[0])


@dataclasses.dataclass
class MovieLensSequences:
    """MovieLens 100K sequences split by user, with the task specifications."""

    train: SequenceSplit
    validation: SequenceSplit
    test: SequenceSplit
    tasks: List[TaskSpec]
    num_movies: int
    feature_names: tuple
    data_dir: pathlib.Path


def _read_genres(path: pathlib.Path) -> np.ndarray:
    """Return `(NUM_MOVIES + 1, 19)` float32 genre flags; row 0 (padding) is zeros."""
    genres = np.zeros((NUM_MOVIES + 1, len(GENRES)), np.float32)
    with open(path, encoding="latin-1") as stream:
        for line in stream:
            fields = line.rstrip("\n").split("|")
            genres[int(fields[0])] = [float(flag) for flag in fields[5 : 5 + len(GENRES)]]
    return genres


def _user_steps(ratings: np.ndarray, genres: np.ndarray):
    """Yield `(user_id, movie_ids, features, ratings)` per user in time order."""
    order = np.lexsort((ratings[:, 1], ratings[:, 3], ratings[:, 0]))
    ratings = ratings[order]
    boundaries = np.flatnonzero(np.diff(ratings[:, 0])) + 1
    for user_ratings in np.split(ratings, boundaries):
        movies = user_ratings[:, 1]
        values = user_ratings[:, 2].astype(np.float32)
        times = user_ratings[:, 3].astype(np.float64)
        previous = np.concatenate([[0.0], values[:-1]]).astype(np.float32)
        has_previous = np.arange(len(values)) > 0
        gaps = np.concatenate([[0.0], np.diff(times)]) / _SECONDS_PER_DAY
        history = np.stack(
            [
                previous / 5.0,
                (previous >= LIKED_THRESHOLD).astype(np.float32),
                has_previous.astype(np.float32),
                np.log1p(np.maximum(gaps, 0.0)).astype(np.float32),
            ],
            axis=-1,
        )
        features = np.concatenate([genres[movies], history], axis=-1)
        yield int(user_ratings[0, 0]), movies, features, values


def _windows(users, max_length: int) -> SequenceSplit:
    windows = [
        (user_id, movies[start : start + max_length], features[start : start + max_length],
         values[start : start + max_length])
        for user_id, movies, features, values in users
        for start in range(0, len(movies), max_length)
    ]  # fmt: skip
    count = len(windows)
    movie_id = np.zeros((count, max_length), np.int32)
    features = np.zeros((count, max_length, len(FEATURE_NAMES)), np.float32)
    rating = np.zeros((count, max_length), np.float32)
    user_id = np.zeros(count, np.int32)
    for row, (user, movies, step_features, values) in enumerate(windows):
        length = len(movies)
        movie_id[row, :length] = movies
        features[row, :length] = step_features
        rating[row, :length] = values
        user_id[row] = user
    mask = movie_id > 0
    liked = ((rating >= LIKED_THRESHOLD) & mask).astype(np.float32)
    return SequenceSplit(movie_id, features, mask, {"rating": rating, "liked": liked}, user_id)


def _split_sizes(num_users: int, validation_fraction: float, test_fraction: float):
    """Return `(num_train, num_validation, num_test)` users. Validation and test get at least 1."""
    num_test = max(1, int(math.floor(test_fraction * num_users)))
    num_validation = max(1, int(math.floor(validation_fraction * num_users)))
    return num_users - num_test - num_validation, num_validation, num_test


def _min_users(validation_fraction: float, test_fraction: float) -> int:
    """Return the fewest users that leave at least one user in every split."""
    num_users = 3
    # The training share 1 - validation_fraction - test_fraction is positive, so the
    # training split grows with the user count and the loop ends.
    while _split_sizes(num_users, validation_fraction, test_fraction)[0] < 1:
        num_users += 1
    return num_users


def _check_max_users(max_users, validation_fraction: float, test_fraction: float) -> None:
    if max_users is None:
        return
    minimum = _min_users(validation_fraction, test_fraction)
    if isinstance(max_users, bool) or not isinstance(max_users, numbers.Integral) or max_users < minimum:
        raise ValueError(
            f"`max_users` must be None or an integer >= {minimum}, so that the train, "
            f"validation and test splits each get at least one user (with "
            f"validation_fraction={validation_fraction} and test_fraction={test_fraction}). "
            f"Received: max_users={max_users!r}"
        )


def load_movielens_sequences(
    data_dir: Optional[pathlib.Path] = None,
    download: bool = False,
    max_length: int = 50,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    max_users: Optional[int] = None,
    tower_units=(16,),
) -> MovieLensSequences:
    """Load MovieLens 100K as per-user activity sequences; see the module docstring.

    Args:
        data_dir: Folder with `u.data`, `u.item` and `u.user` (or its `movielens-100k/`
            subfolder). When it is given, only it is searched. When it is None, the
            files are searched in `$MTL_LAYERS_DATA_DIR`, then in the download cache.
        download: Download the GroupLens archive into the cache when the files are
            not found.
        max_length: Steps per window, an integer >= 2.
        validation_fraction: Fraction of users in the validation split.
        test_fraction: Fraction of users in the test split.
        seed: Seed of the user split, an integer >= 0.
        max_users: Keep only this many users (a random subset), for quick runs. It
            must be large enough to leave a user in every split (3 with the default
            fractions). None keeps all 943 users, as does any larger value.
        tower_units: Tower sizes of the two `TaskSpec`s.

    Raises:
        ValueError: An argument is invalid.
        FileNotFoundError: `data_dir` is not a folder, or the files are missing and
            `download` is False.
        mtl_layers.datasets.files.ChecksumError: A file differs from the official one.
    """
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise ValueError(f"`max_length` must be an integer >= 2. Received: max_length={max_length!r}")
    for name, value in (("validation_fraction", validation_fraction), ("test_fraction", test_fraction)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
            raise ValueError(f"`{name}` must be a number in (0, 1). Received: {name}={value!r}")
    if validation_fraction + test_fraction >= 1:
        raise ValueError(
            "`validation_fraction + test_fraction` must be below 1 to leave training users. "
            f"Received: {validation_fraction} + {test_fraction}."
        )
    _check_max_users(max_users, validation_fraction, test_fraction)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"`seed` must be an integer >= 0. Received: seed={seed!r}")
    folder = find_movielens_dir(data_dir, download=download)
    ratings = np.loadtxt(folder / "u.data", dtype=np.int64, delimiter="\t")
    genres = _read_genres(folder / "u.item")

    users = list(_user_steps(ratings, genres))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(users))
    if max_users is not None:
        order = order[:max_users]
    _, num_validation, num_test = _split_sizes(len(order), validation_fraction, test_fraction)
    test = [users[index] for index in order[:num_test]]
    validation = [users[index] for index in order[num_test : num_test + num_validation]]
    train = [users[index] for index in order[num_test + num_validation :]]
    tasks = [
        TaskSpec("rating", kind="regression", tower_units=tuple(tower_units)),
        TaskSpec("liked", kind="binary", tower_units=tuple(tower_units)),
    ]
    return MovieLensSequences(
        train=_windows(train, max_length),
        validation=_windows(validation, max_length),
        test=_windows(test, max_length),
        tasks=tasks,
        num_movies=NUM_MOVIES,
        feature_names=FEATURE_NAMES,
        data_dir=folder,
    )
