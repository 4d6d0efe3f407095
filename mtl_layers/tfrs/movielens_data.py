"""MovieLens 100K as one example per rating, with user and movie features, for TFRS tasks.

Each example joins a rating from `u.data` with its user (`u.user`) and movie (`u.item`).
The labels are the rating (1 to 5, regression) and `liked`, whether the rating is at least
4 (binary). The files are read from a folder (`data_dir`, `$MTL_LAYERS_DATA_DIR` or its
`movielens-100k/` subfolder) or downloaded from GroupLens, and every file is checked
against its pinned SHA-256. MovieLens may not be redistributed (GroupLens terms), so the
package never contains it.
"""

import dataclasses
import pathlib
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from absl import logging

from mtl_layers.datasets import files
from mtl_layers.datasets.census import Split
from mtl_layers.models.features import FeatureSpec
from mtl_layers.tasks import TaskSpec

MOVIELENS_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"

# SHA-256 of the official GroupLens files, as published with the data set copies.
MOVIELENS_SHA256 = {
    "u.data": "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
    "u.item": "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701",
    "u.user": "f120e114da2e8cf314fd28f99417c94ae9ddf1cb6db8ce0e4b5995d40e90e62c",
}

GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip

USER_FEATURES = ("user_id", "user_age", "user_gender", "user_occupation", "user_zip_region")
MOVIE_FEATURES = ("movie_id", "movie_year", "movie_genres")
LIKED_THRESHOLD = 4


@dataclasses.dataclass
class MovieLensRatings:
    """MovieLens 100K ratings split for training, with feature and task specifications.

    `feature_specs` hold vocabularies, means and variances computed on `train` only.
    `movies` contains the movie features of every movie in `u.item`, the candidates of a
    retrieval task.
    """

    train: Split
    validation: Split
    test: Split
    feature_specs: List[FeatureSpec]
    tasks: List[TaskSpec]
    user_features: Tuple[str, ...]
    movie_features: Tuple[str, ...]
    movies: Dict[str, np.ndarray]
    description: str


def _download(url: str, target_dir: pathlib.Path) -> pathlib.Path:
    """Download the GroupLens zip and extract the verified `u.*` files missing from `target_dir`."""
    target_dir.mkdir(parents=True, exist_ok=True)
    manual_step = (
        f"download ml-100k.zip by hand and copy {sorted(MOVIELENS_SHA256)} from its ml-100k/ "
        f"folder into {target_dir}"
    )
    logging.info("Downloading %s", url)
    with tempfile.TemporaryFile() as buffer:
        files.fetch_url(url, buffer, target_dir, manual_step)
        buffer.seek(0)
        with files.open_zip(buffer, url, manual_step) as archive:
            for name, digest in MOVIELENS_SHA256.items():
                if (target_dir / name).is_file():
                    continue
                handle = tempfile.NamedTemporaryFile(dir=target_dir, prefix=f".{name}.", delete=False)
                temporary = pathlib.Path(handle.name)
                try:
                    with handle:
                        files.read_zip_member(archive, f"ml-100k/{name}", handle, url, manual_step)
                    files.check_download_sha256(temporary, digest, url, target_dir / name)
                    temporary.replace(target_dir / name)
                except BaseException:
                    temporary.unlink(missing_ok=True)
                    raise
    return target_dir


def find_movielens_dir(
    data_dir: Optional[pathlib.Path] = None, download: bool = False, url: Optional[str] = None
) -> pathlib.Path:
    """Return a folder with verified `u.data`, `u.item` and `u.user`.

    With `data_dir`, looks only in `data_dir` and `data_dir/movielens-100k`, so a mistyped
    folder fails instead of silently reading another copy. Without it, looks under
    `$MTL_LAYERS_DATA_DIR` (and its `movielens-100k/`), then in the download cache. With
    `download=True`, files found in none of those folders are taken from the cache,
    downloaded from `url` (by default the GroupLens archive) into it first if needed.

    Raises:
        FileNotFoundError: `data_dir` is not a folder, or the files are in none of the
            folders and `download` is False.
        mtl_layers.datasets.files.ChecksumError: A file differs from the official one.
    """
    names = sorted(MOVIELENS_SHA256)
    url = url or MOVIELENS_URL
    cache = files.cache_dir() / "movielens-100k"
    if data_dir is not None:
        root = files.check_data_dir(
            data_dir,
            f"the MovieLens 100K files {names}",
            f"Download ml-100k.zip from {url} and copy its {names} there.",
        )
        folders = [root, root / "movielens-100k"]
    else:
        default = files.default_data_dir()
        folders = [] if default is None else [default, default / "movielens-100k"]
        folders.append(cache)

    found = next(
        (folder for folder in folders if all((folder / name).is_file() for name in names)), None
    )
    if found is None:
        searched = [str(folder) for folder in folders]
        if not download:
            where = "in `data_dir` " if data_dir is not None else ""
            # Name only the files that each searched folder lacks.
            missing = {
                str(folder): [name for name in names if not (folder / name).is_file()]
                for folder in folders
            }
            raise FileNotFoundError(
                f"MovieLens 100K files not found {where}(missing per searched folder: {missing})."
                f"{files.not_regular_files(folders, names)} Copy them there from {url}, pass "
                f"the folder that contains them as `data_dir`, set "
                f"${files.DATA_DIR_VARIABLE}, or pass `download=True`."
            )
        if data_dir is not None:
            logging.warning(
                "MovieLens 100K not found in %s; download=True takes it from %s.", searched, cache
            )
        found = cache
        if not all((cache / name).is_file() for name in names):
            _download(url, cache)

    for name, digest in MOVIELENS_SHA256.items():
        files.verify_sha256(found / name, digest)
    return found


def _read_users(path: pathlib.Path) -> Dict[int, Tuple[float, str, str, str]]:
    users = {}
    with open(path, encoding="ascii") as stream:
        for line in stream:
            user_id, age, gender, occupation, zip_code = line.rstrip("\n").split("|")
            # Non-numeric zip codes are Canadian postcodes; their first 3 characters are
            # a region too.
            users[int(user_id)] = (float(age), gender, occupation, zip_code[:3])
    return users


def _read_movies(path: pathlib.Path) -> Dict[int, Tuple[float, str]]:
    movies = {}
    with open(path, encoding="latin-1") as stream:
        for line in stream:
            fields = line.rstrip("\n").split("|")
            release_date = fields[2]
            year = float(release_date[-4:]) if release_date else float("nan")
            flags = fields[5:]
            genres = "|".join(genre for genre, flag in zip(GENRES, flags) if flag == "1")
            movies[int(fields[0])] = (year, genres or "unknown")
    return movies


def _read_ratings(path: pathlib.Path) -> np.ndarray:
    return np.loadtxt(path, dtype=np.int64, delimiter="\t")


def _vocabulary(values: np.ndarray) -> tuple:
    return tuple(sorted(set(values.tolist())))


def _feature_specs(train: Split, embedding_dim: int) -> List[FeatureSpec]:
    specs = []
    for name in USER_FEATURES + MOVIE_FEATURES:
        values = train.features[name]
        if name in ("user_id", "movie_id"):
            specs.append(
                FeatureSpec(name, "integer_categorical", _vocabulary(values), embedding_dim=embedding_dim)
            )
        elif values.dtype == object:
            specs.append(FeatureSpec(name, "categorical", _vocabulary(values), embedding_dim=embedding_dim))
        else:
            specs.append(
                FeatureSpec(name, "numeric", mean=float(values.mean()), variance=float(values.var()))
            )
    return specs


def load_movielens_ratings(
    data_dir: Optional[pathlib.Path] = None,
    download: bool = False,
    test_fraction: float = 0.2,
    validation_fraction: float = 0.1,
    seed: int = 0,
    embedding_dim: int = 8,
    tower_units: Sequence[int] = (16,),
) -> MovieLensRatings:
    """Load MovieLens 100K with one example per rating and a seeded random split.

    Args:
        data_dir: Folder with `u.data`, `u.item` and `u.user` (or with a
            `movielens-100k/` subfolder that has them).
        download: Download the GroupLens archive when the files are not found.
        test_fraction: Fraction of the ratings held out for testing.
        validation_fraction: Fraction of the ratings held out for validation.
        seed: Seed of the random split.
        embedding_dim: Embedding size of the id and categorical features.
        tower_units: Tower sizes of the returned task specifications.

    Returns:
        A `MovieLensRatings` whose splits hold the raw features (int64 ids, float32
        numbers, strings) and the labels `rating` (float32, 1 to 5) and `liked`
        (float32, 1.0 when the rating is at least 4).
    """
    for name, fraction in (("test_fraction", test_fraction), ("validation_fraction", validation_fraction)):
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"`{name}` must be in [0, 1). Received: {name}={fraction!r}")
    if test_fraction + validation_fraction >= 1.0:
        raise ValueError(
            "`test_fraction + validation_fraction` must be < 1 so that training data remains. "
            f"Received: {test_fraction!r} + {validation_fraction!r}"
        )
    folder = find_movielens_dir(data_dir, download)
    users = _read_users(folder / "u.user")
    movies = _read_movies(folder / "u.item")
    ratings = _read_ratings(folder / "u.data")

    # Item 267 has no release date; it gets the mean year of the other movies.
    known_years = [year for year, _ in movies.values() if not np.isnan(year)]
    mean_year = float(np.mean(known_years))
    movies = {
        movie_id: (mean_year if np.isnan(year) else year, genres)
        for movie_id, (year, genres) in movies.items()
    }

    user_ids, movie_ids = ratings[:, 0], ratings[:, 1]
    columns = {
        "user_id": user_ids,
        "user_age": np.array([users[user][0] for user in user_ids], dtype=np.float32),
        "user_gender": np.array([users[user][1] for user in user_ids], dtype=object),
        "user_occupation": np.array([users[user][2] for user in user_ids], dtype=object),
        "user_zip_region": np.array([users[user][3] for user in user_ids], dtype=object),
        "movie_id": movie_ids,
        "movie_year": np.array([movies[movie][0] for movie in movie_ids], dtype=np.float32),
        "movie_genres": np.array([movies[movie][1] for movie in movie_ids], dtype=object),
    }
    labels = {
        "rating": ratings[:, 2].astype(np.float32),
        "liked": (ratings[:, 2] >= LIKED_THRESHOLD).astype(np.float32),
    }

    order = np.random.default_rng(seed).permutation(len(ratings))
    num_test = int(round(test_fraction * len(ratings)))
    num_validation = int(round(validation_fraction * len(ratings)))
    index_sets = (
        order[num_test + num_validation :],
        order[num_test : num_test + num_validation],
        order[:num_test],
    )
    train, validation, test = (
        Split(
            features={name: values[indices] for name, values in columns.items()},
            labels={name: values[indices] for name, values in labels.items()},
        )
        for indices in index_sets
    )

    movie_table = sorted(movies.items())
    candidates = {
        "movie_id": np.array([movie_id for movie_id, _ in movie_table], dtype=np.int64),
        "movie_year": np.array([year for _, (year, _) in movie_table], dtype=np.float32),
        "movie_genres": np.array([genres for _, (_, genres) in movie_table], dtype=object),
    }
    tower_units = tuple(tower_units)
    return MovieLensRatings(
        train=train,
        validation=validation,
        test=test,
        feature_specs=_feature_specs(train, embedding_dim),
        tasks=[
            TaskSpec("rating", kind="regression", tower_units=tower_units),
            TaskSpec("liked", kind="binary", tower_units=tower_units),
        ],
        user_features=USER_FEATURES,
        movie_features=MOVIE_FEATURES,
        movies=candidates,
        description=(
            f"MovieLens 100K from {folder}: {len(train)} train, {len(validation)} validation, "
            f"{len(test)} test ratings (random split, seed {seed})."
        ),
    )
