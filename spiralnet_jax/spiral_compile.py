"""The spiral as prediction calls it: one executable per segmenter, XLA options and batch size,
all compiled ahead at first use.

`continuation.run_batched` calls the segmenter with a few batch sizes (full batches, smaller
ones for a remainder or a round of a few moves: `continuation.all_batch_sizes`). Compiled one by
one as they first come, a later field would compile the size it is the first to need; compiled
together before the first batch, no field after the first compiles anything (tested).
"""

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from spiralnet_jax import continuation
from spiralnet_jax import segmenter as segmenter_lib
from spiralnet_jax import xla_cpu

Options = tuple[tuple[str, str], ...]


def _segment_batch(segmenter: segmenter_lib.Segmenter, params: Any, region_batch: jax.Array,
                   init_mask: jax.Array) -> jax.Array:
  """One fixed-size batch through the whole spiral."""
  return segmenter.apply(params, region_batch, init_mask)


@functools.cache
def _jitted(options: Options) -> Callable[..., jax.Array]:
  return jax.jit(_segment_batch, static_argnums=0, compiler_options=dict(options) or None)


@functools.cache
def _compile_ahead(segmenter: segmenter_lib.Segmenter, options: Options, sizes: tuple[int, ...],
                   treedef: Any, leaves: tuple[jax.ShapeDtypeStruct, ...]) -> None:
  """Compiles the spiral for each batch size, for parameters of these shapes and dtypes (cached:
  once per process and key)."""
  params = jax.tree.unflatten(treedef, leaves)
  for size in sizes:
    regions = jax.ShapeDtypeStruct((size,) + segmenter.region_shape, jnp.float32)
    masks = jax.ShapeDtypeStruct((size,) + segmenter.region_shape + (3,), jnp.float32)
    _jitted(options).lower(segmenter, params, regions, masks).compile()


def segment_fn(segmenter: segmenter_lib.Segmenter, params: Any, fusion: str, batch_size: int,
               threads: int) -> continuation.SegmentFn:
  """segment_fn(regions, init_mask) -> probs with `params` bound, compiled for every batch size
  `run_batched(..., batch_size, threads)` uses; `fusion`: `predict.cpu_ynn_fusion`."""
  options = xla_cpu.spiral_options(fusion, segmenter.step)
  leaves, treedef = jax.tree.flatten(params)
  _compile_ahead(segmenter, options, tuple(continuation.all_batch_sizes(batch_size, threads)),
                 treedef, tuple(jax.ShapeDtypeStruct(np.shape(x), x.dtype) for x in leaves))
  return functools.partial(_jitted(options), segmenter, params)
