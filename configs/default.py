"""The shared defaults (spiralnet_jax.defaults): the thesis method; other configs derive from it.

Not meant to be trained directly; see configs/spiral.py, unet.py, demo.py.
"""

from spiralnet_jax.defaults import get_config  # pylint: disable=unused-import
