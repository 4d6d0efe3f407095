"""Packaging for mtl_layers."""

import pathlib

import setuptools

HERE = pathlib.Path(__file__).parent

# TensorFlow, tf-keras and tensorflow-serving-api are pinned to one release: `tf-keras`
# depends on `tensorflow` and installing it at another release replaces TensorFlow's files.
TENSORFLOW_RELEASE = "2.21"

INSTALL_REQUIRES = [
    f"tensorflow>={TENSORFLOW_RELEASE},<2.22",
    "keras>=3.10,<3.16",
    "numpy>=1.26,<3",
    "absl-py>=2.1,<3",
]

EXTRAS_REQUIRE = {
    # Keras 2 mode (TF_USE_LEGACY_KERAS=1), needed by TensorFlow Recommenders 0.7.
    "legacy": [f"tf-keras>={TENSORFLOW_RELEASE},<2.22"],
    "tfrs": [
        f"tf-keras>={TENSORFLOW_RELEASE},<2.22",
        "tensorflow-recommenders>=0.7.7,<0.8",
    ],
    "serving": [f"tensorflow-serving-api>={TENSORFLOW_RELEASE},<2.22"],
    "datasets": ["tensorflow-datasets>=4.9.9,<4.10", "importlib_resources>=6,<8"],
    "examples": ["matplotlib>=3.8,<4"],
    "notebooks": ["nbclient>=0.10,<0.12", "nbformat>=5.10,<6", "ipykernel>=6.29,<8"],
    "backends": ["jax==0.10.2", "jaxlib==0.10.2", "torch==2.13.0"],
}
EXTRAS_REQUIRE["test"] = sorted(
    {
        "pytest>=8,<10",
        # tfds.testing pickles builders with dill; the GLUE metric tests compare with SciPy.
        "dill>=0.3.8,<0.5",
        "scipy>=1.11,<2",
        *EXTRAS_REQUIRE["legacy"],
        *EXTRAS_REQUIRE["tfrs"],
        *EXTRAS_REQUIRE["serving"],
        *EXTRAS_REQUIRE["datasets"],
        *EXTRAS_REQUIRE["examples"],
        *EXTRAS_REQUIRE["notebooks"],
    }
)
# "all" leaves out the backends: on PyPI, torch==2.13.0 for Linux is a multi-GB CUDA build.
EXTRAS_REQUIRE["all"] = sorted(
    {req for name, reqs in EXTRAS_REQUIRE.items() if name != "backends" for req in reqs}
)

setuptools.setup(
    name="mtl_layers",
    version="0.1.0",
    description="Keras layers and models for multi-task learning: MMoE, MoSE, HyperGrid.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11,<3.12",
    packages=setuptools.find_packages(include=["mtl_layers", "mtl_layers.*"]),
    package_data={
        "mtl_layers.datasets": ["data/adult/*", "tfds/checksums.tsv"],
        # C++ source of SequentialExpert's training kernel, compiled on first use.
        "mtl_layers.layers": ["kernels/*.cc"],
    },
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    classifiers=[
        "Programming Language :: Python :: 3.11",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
