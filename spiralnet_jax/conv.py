"""A 2-D convolution whose backward pass is itself written as plain forward convolutions.

XLA:CPU leaves the transposed convolutions that autodiff emits unoptimised when they sit inside
a `lax.scan` body (jax-ml/jax#12868; ~20x slower training of the recursive segmenter). Writing
the VJP by hand as ordinary NHWC x HWIO -> NHWC convolutions keeps every convolution on the
fast path. Drop-in for Flax: `nn.Conv(..., conv_general_dilated=conv_general_dilated)`.
"""

from collections.abc import Sequence
import functools
from typing import Any

import jax
from jax import lax
import jax.numpy as jnp

Pads = tuple[tuple[int, int], tuple[int, int]]

_SPEC = ("NHWC", "HWIO", "NHWC")


def _is_nhwc_hwio(dimension_numbers: Any, lhs_ndim: int) -> bool:
  """Whether `dimension_numbers` (any form lax accepts) means NHWC x HWIO -> NHWC."""
  if dimension_numbers is None:
    return False
  shape = (1,) * lhs_ndim
  want = lax.conv_dimension_numbers(shape, shape, _SPEC)
  got = lax.conv_dimension_numbers(shape, shape, dimension_numbers)
  return tuple(got) == tuple(want)


def _plain_conv(lhs: jax.Array, rhs: jax.Array, pads: Pads, precision: Any) -> jax.Array:
  return lax.conv_general_dilated(lhs, rhs, (1, 1), pads, dimension_numbers=_SPEC,
                                  precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x: jax.Array, w: jax.Array, pads: Pads, precision: Any) -> jax.Array:
  return _plain_conv(x, w, pads, precision)


def _conv_fwd(x, w, pads, precision):
  return _plain_conv(x, w, pads, precision), (x, w)


def _conv_bwd(pads, precision, residuals, g):
  x, w = residuals
  # Input gradient: correlate the cotangent with the spatially flipped, in/out-swapped
  # kernel; padding k-1-pad restores the input's extent on each side.
  w_t = jnp.flip(w, (0, 1)).swapaxes(2, 3)
  pads_t = tuple((k - 1 - lo, k - 1 - hi) for (lo, hi), k in zip(pads, w.shape[:2]))
  dx = _plain_conv(g, w_t, pads_t, precision)
  # Kernel gradient: with batch and channels swapped (x as (C_in, H, W, B), cotangent as an
  # (H', W', B, C_out) "kernel") the batch sum becomes the convolution's channel sum.
  dw = _plain_conv(x.transpose(3, 1, 2, 0), g.transpose(1, 2, 0, 3), pads, precision)
  return dx.astype(x.dtype), dw.transpose(1, 2, 0, 3).astype(w.dtype)


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv_general_dilated(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int] = (1, 1),
    padding: str | Sequence[tuple[int, int]] = "SAME",
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = _SPEC,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision: Any = None,
    preferred_element_type: Any = None,
) -> jax.Array:
  """`lax.conv_general_dilated` for NHWC/HWIO, stride 1, no dilation, with a hand-written VJP."""
  if lhs.ndim != 4 or rhs.ndim != 4 or not _is_nhwc_hwio(dimension_numbers, lhs.ndim):
    raise ValueError(f"only 2-D NHWC x HWIO convolutions, got {dimension_numbers}")
  for name, value in (("window_strides", window_strides), ("lhs_dilation", lhs_dilation),
                      ("rhs_dilation", rhs_dilation)):
    if value is not None and any(v != 1 for v in value):
      raise ValueError(f"only {name} of 1 is supported, got {value}")
  if feature_group_count != 1 or batch_group_count != 1 or preferred_element_type is not None:
    raise ValueError("feature/batch groups and preferred_element_type are not supported")
  if isinstance(padding, str):
    pads = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], (1, 1), padding)
  else:
    pads = padding
  pads = tuple((int(lo), int(hi)) for lo, hi in pads)
  return _conv(lhs, rhs, pads, precision)
