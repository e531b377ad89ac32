"""The bundled sample is declared as package data, so `pip install .` ships it."""

import fnmatch
import os

import tomllib

from volnet.data import sample_dir

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_every_sample_file_matches_the_package_data_patterns():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        patterns = tomllib.load(f)["tool"]["setuptools"]["package-data"]["volnet"]
    files = sorted(os.listdir(sample_dir()))
    assert {"README.md", "train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"} <= set(files)
    for name in files:
        relative = f"data/mnist_sample/{name}"
        assert any(fnmatch.fnmatch(relative, p) for p in patterns), relative
    assert os.path.isfile(os.path.join(ROOT, "volnet", "data", "__init__.py"))   # a real package
