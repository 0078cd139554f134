"""Package discovery that pyproject.toml cannot express: `datasets/` installs as `handprop_datasets`."""
from setuptools import find_packages, setup

ours = find_packages(include=["mano_jax", "mano_jax.*", "handprop_jax", "handprop_jax.*"])
tfds_folders = ["handprop_datasets." + p for p in find_packages(where="datasets")]
setup(
    packages=ours + ["handprop_datasets"] + tfds_folders,
    package_dir={"handprop_datasets": "datasets"},
    package_data={"": ["*.txt", "*.md", "*.json", "*.tsv", "*.cc"]},
)
