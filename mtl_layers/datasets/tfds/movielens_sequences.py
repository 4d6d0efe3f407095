"""TFDS builder `movielens_sequences`: MovieLens 100K as one activity sequence per user.

    dataset = tfds.load("movielens_sequences", split="train[:80%]", as_supervised=True)
    dataset = dataset.padded_batch(32, padded_shapes=({"movie_id": [50], ...}, ...))

Each of the 943 users is one example with all of the user's ratings in time order (ties
by movie id), so the lengths sum to the 100,000 ratings. Steps and labels are those of
`mtl_layers.datasets.movielens`, which computes them: `inputs` contains `movie_id`,
`features` (`movielens.FEATURE_NAMES`: 19 genre flags, then the previous rating / 5,
whether it was liked, whether there is one, and log(1 + days since it)) and `mask` (True
at every stored step, so padded steps of a padded batch read False). `labels` contains
`rating` (1 to 5) and `liked` (1.0 when the rating is at least 4).

The one split `train` contains every user. TFDS writes the examples in an order shuffled by
key, so slices such as `train[:70%]`, `train[70%:80%]` and `train[80%:]` are disjoint
random user subsets, and test users are unseen in training.
"""

import pathlib

import numpy as np
import tensorflow_datasets as tfds

from mtl_layers.datasets import files, movielens
from mtl_layers.datasets.tfds import _sources
from mtl_layers.tfrs import movielens_data

DESCRIPTION = """\
MovieLens 100K (GroupLens; Harper and Konstan, 2015): 100,000 ratings (1 to 5) of 1,682
movies by 943 users, 1997-1998. Each example is one user's ratings in time order with two
tasks per step: the rating (regression) and whether it is at least 4 (binary). The inputs
at a step never contain the rating of that step. GroupLens terms: research use only, no
redistribution, cite the paper below.
"""

CITATION = """\
@article{harper2015movielens,
  title={The MovieLens Datasets: History and Context},
  author={Harper, F. Maxwell and Konstan, Joseph A.},
  journal={ACM Transactions on Interactive Intelligent Systems},
  volume={5},
  number={4},
  articleno={19},
  year={2015},
  doi={10.1145/2827872}
}

@inproceedings{qin2020mose,
  title={Multitask Mixture of Sequential Experts for User Activity Streams},
  author={Qin, Zhen and Cheng, Yicheng and Zhao, Zhe and Chen, Zhe and Metzler, Donald and Qin, Jingzheng},
  booktitle={Proceedings of the 26th ACM SIGKDD International Conference on Knowledge Discovery \\& Data Mining},
  year={2020}
}"""

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Put u.data, u.item and u.user of MovieLens 100K (the ml-100k folder of
{movielens_data.MOVIELENS_URL}) in the manual folder or in its `movielens-100k/`
subfolder. When they are missing, the archive is downloaded from that address.
"""

REQUIRED_FILES = ("u.data", "u.item", "u.user")


class MovielensSequences(tfds.core.GeneratorBasedBuilder):
    """MovieLens 100K per-user rating sequences with the rating and liked tasks."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

    def _info(self) -> tfds.core.DatasetInfo:
        num_features = len(movielens.FEATURE_NAMES)
        return self.dataset_info_from_configs(
            description=DESCRIPTION,
            features=tfds.features.FeaturesDict(
                {
                    "user_id": tfds.features.Scalar(np.int32, doc="GroupLens user id, 1 to 943."),
                    "inputs": tfds.features.FeaturesDict(
                        {
                            "movie_id": tfds.features.Sequence(
                                tfds.features.Scalar(np.int32), doc="GroupLens movie id, 1 to 1682."
                            ),
                            "features": tfds.features.Sequence(
                                tfds.features.Tensor(shape=(num_features,), dtype=np.float32),
                                doc="Step features in the order of movielens.FEATURE_NAMES: "
                                + ", ".join(movielens.FEATURE_NAMES)
                                + ".",
                            ),
                            "mask": tfds.features.Sequence(
                                tfds.features.Scalar(np.bool_),
                                doc="True at every stored step; padding adds False.",
                            ),
                        }
                    ),
                    "labels": tfds.features.FeaturesDict(
                        {
                            "rating": tfds.features.Sequence(
                                tfds.features.Scalar(np.float32), doc="The rating, 1 to 5."
                            ),
                            "liked": tfds.features.Sequence(
                                tfds.features.Scalar(np.float32),
                                doc="1.0 when the rating is at least 4, else 0.0.",
                            ),
                        }
                    ),
                }
            ),
            supervised_keys=("inputs", "labels"),
            homepage="https://grouplens.org/datasets/movielens/100k/",
            citation=CITATION,
            license="GroupLens research licence: research use only, no redistribution.",
        )

    def _source_folder(self, dl_manager) -> pathlib.Path:
        folders = _sources.search_folders(dl_manager, "movielens-100k")
        for folder in folders:
            if all((folder / name).is_file() for name in REQUIRED_FILES):
                break
        else:
            archive = _sources.download_missing(
                dl_manager,
                dl_manager.download_and_extract,
                movielens_data.MOVIELENS_URL,
                _sources.missing_in_folders(folders, REQUIRED_FILES),
                folders,
            )
            folder = archive / "ml-100k"
        for name, digest in movielens_data.MOVIELENS_SHA256.items():
            files.verify_sha256(folder / name, digest)
        return folder

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(self._source_folder(dl_manager))}

    def _generate_examples(self, folder: pathlib.Path):
        ratings = movielens_data._read_ratings(folder / "u.data")
        genres = movielens._read_genres(folder / "u.item")
        for user_id, movie_ids, features, values in movielens._user_steps(ratings, genres):
            example = {
                "user_id": user_id,
                "inputs": {
                    "movie_id": movie_ids.astype(np.int32),
                    "features": features.astype(np.float32),
                    "mask": np.ones(len(movie_ids), np.bool_),
                },
                "labels": {
                    "rating": values,
                    "liked": (values >= movielens_data.LIKED_THRESHOLD).astype(np.float32),
                },
            }
            yield user_id, example
