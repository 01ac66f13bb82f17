"""Packaging for ims-python-helper."""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "ims_python_helper" / "__init__.py").read_text()).group(1)


def requirements(name):
    lines = (HERE / name).read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip() and not line.startswith("-")]


setup(
    name="ims-python-helper",
    version=VERSION,
    description="Publish boot images and recipes into the Cray Image Management Service (IMS)",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    packages=find_packages(include=["ims_python_helper", "ims_python_helper.*"]),
    python_requires=">=3.9",
    install_requires=requirements("requirements.txt"),
    extras_require={
        # The embedded local stack: a real S3 server process (moto in server mode).
        "local": ["moto[s3]>=5.0", "flask", "flask-cors", "trustme>=1.0"],
        # Progress bars on a terminal (pods get log lines without it).
        "progress": ["tqdm>=4.60"],
        # Recipe templating in the job-pod toolkit (imported only when a recipe lists templates).
        "template": ["Jinja2>=3.0", "PyYAML>=5.4"],
    },
    entry_points={"console_scripts": ["ims-python-helper=ims_python_helper.cli:console_main"]},
    classifiers=[
        "License :: OSI Approved :: MIT License",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.9",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
    ],
)
