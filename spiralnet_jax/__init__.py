"""spiralnet_jax: SpiralNet (Dekret, 2019), a two-stage recursive CNN for nucleus segmentation, in JAX."""

__version__ = "0.1.0"
