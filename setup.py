"""Packaging beyond what pyproject.toml can say: ship the top-level ``conf/`` folder inside the package.

The Hydra configs stay at the top of the repository (where users read and edit them), and a built wheel carries
them as the package ``bdrun.conf`` (``package_dir`` maps it to ``conf/``), so ``pip install .`` gives a working
``bdrun``. ``bdrun.configs.CONF_DIR`` finds the packaged copy first and falls back to the source tree.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["bdrun*"]), "bdrun.conf"],
    package_dir={"bdrun.conf": "conf"},
)
