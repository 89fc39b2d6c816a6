"""spiralnet_jax: a JAX/Flax reimplementation of SpiralNet (Dekret, University of Tartu, 2019)."""

import setuptools

setuptools.setup(
    name="spiralnet_jax",
    version="0.1.0",
    description="SpiralNet, a two-stage recursive CNN for nucleus segmentation, in JAX/Flax",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["spiralnet_jax", "spiralnet_jax.*"]),
    package_data={"spiralnet_jax": ["data/sample/*", "data/sample/*/*", "weights/*/*",
                                    "napari.yaml"]},
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.4.30",
        "flax>=0.10",
        "optax",
        "orbax-checkpoint",
        "ml-collections",
        "numpy",
        "scipy",
        "scikit-image",
        "tifffile",
        "roifile",
        "imagecodecs",
        "imageio",
        "absl-py",
        "tensorflow-datasets",
        "array_record",
        "tqdm",
        "chex",
        "matplotlib",
        "tensorboardX",
    ],
    extras_require={"test": ["pytest", "hypothesis"],
                    # The napari plugin (spiralnet_jax/napari.yaml) and its offscreen test.
                    "napari": ["napari[pyqt5]", "magicgui"],
                    # spiralnet-segment --dask / --scheduler (Dask's distributed scheduler).
                    "dask": ["dask[distributed]", "zarr"]},
    entry_points={"console_scripts": ["spiralnet-segment = spiralnet_jax.segment:main"],
                  "napari.manifest": ["spiralnet_jax = spiralnet_jax:napari.yaml"]},
)
