"""The spiral as prediction calls it: one executable per segmenter, XLA options and batch size,
all compiled ahead at first use.

`continuation.run_batched` calls the segmenter with a few batch sizes (full batches, smaller
ones for a remainder or a round of a few moves: `continuation.all_batch_sizes`). Compiled one by
one as they first come, a later field would compile the size it is the first to need; compiled
together before the first batch, no field after the first compiles anything (tested). Under
`predict.exit_rings` (`early_exit`) the spiral is compiled in two parts instead, its start and
a span of its steps with traced bounds, each once per batch size.
"""

import functools
from typing import Any, Callable

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from spiralnet_jax import continuation
from spiralnet_jax import early_exit
from spiralnet_jax import segmenter as segmenter_lib
from spiralnet_jax import xla_cpu

Options = tuple[tuple[str, str], ...]


def _segment_batch(segmenter: segmenter_lib.Segmenter, params: Any, region_batch: jax.Array,
                   init_mask: jax.Array) -> jax.Array:
  """One fixed-size batch through the whole spiral."""
  return segmenter.apply(params, region_batch, init_mask)


def _start_batch(segmenter: segmenter_lib.Segmenter, params: Any, region_batch: jax.Array,
                 init_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """A batch's (image source, mask canvas) before its first step (`early_exit`)."""
  def one(region, mask):  # Per region, vmapped, as `Segmenter.apply`.
    image_canvas = segmenter.to_canvas(region[None, :, :, None])
    return (segmenter.image_source(params, image_canvas, segmenter.hoisted)[0],
            segmenter.to_canvas(mask[None])[0])
  return jax.vmap(one)(region_batch, init_mask)


def _steps_batch(segmenter: segmenter_lib.Segmenter, params: Any, source: jax.Array,
                 mask_canvas: jax.Array, first: jax.Array, stop: jax.Array) -> jax.Array:
  """A batch's mask canvases after spiral steps first..stop-1 (`early_exit`), one at a time;
  traced bounds, so one executable serves every span."""
  offsets = jnp.asarray(segmenter.offsets, jnp.int32)

  def one(source, canvas):
    step = lambda k, c: segmenter.predict_group(params, source[None], c,
                                                lax.dynamic_slice_in_dim(offsets, k, 1))
    return lax.fori_loop(first, stop, step, canvas[None])[0]
  return jax.vmap(one)(source, mask_canvas)


@functools.cache
def _jitted(options: Options, fn: Callable[..., Any] = _segment_batch) -> Callable[..., Any]:
  return jax.jit(fn, static_argnums=0, compiler_options=dict(options) or None)


@functools.cache
def _compile_ahead(segmenter: segmenter_lib.Segmenter, options: Options, sizes: tuple[int, ...],
                   treedef: Any, leaves: tuple[jax.ShapeDtypeStruct, ...],
                   in_parts: bool = False) -> None:
  """Compiles the spiral (`in_parts`: its start and its steps) for each batch size, for
  parameters of these shapes and dtypes (cached: once per process and key)."""
  params = jax.tree.unflatten(treedef, leaves)
  for size in sizes:
    regions = jax.ShapeDtypeStruct((size,) + segmenter.region_shape, jnp.float32)
    masks = jax.ShapeDtypeStruct((size,) + segmenter.region_shape + (3,), jnp.float32)
    if not in_parts:
      _jitted(options).lower(segmenter, params, regions, masks).compile()
      continue
    _jitted(options, _start_batch).lower(segmenter, params, regions, masks).compile()
    source, canvas = jax.eval_shape(functools.partial(_start_batch, segmenter), params, regions,
                                    masks)
    bound = jax.ShapeDtypeStruct((), jnp.int32)
    _jitted(options, _steps_batch).lower(segmenter, params, source, canvas, bound,
                                         bound).compile()


def _compiled_options(segmenter: segmenter_lib.Segmenter, params: Any, fusion: str,
                      batch_size: int, threads: int, in_parts: bool) -> Options:
  """The XLA options for `fusion`, after compiling ahead for every batch size."""
  options = xla_cpu.spiral_options(fusion, segmenter.step)
  leaves, treedef = jax.tree.flatten(params)
  _compile_ahead(segmenter, options, tuple(continuation.all_batch_sizes(batch_size, threads)),
                 treedef, tuple(jax.ShapeDtypeStruct(np.shape(x), x.dtype) for x in leaves),
                 in_parts)
  return options


def segment_fn(segmenter: segmenter_lib.Segmenter, params: Any, fusion: str, batch_size: int,
               threads: int) -> continuation.SegmentFn:
  """segment_fn(regions, init_mask) -> probs with `params` bound, compiled for every batch size
  `run_batched(..., batch_size, threads)` uses; `fusion`: `predict.cpu_ynn_fusion`."""
  options = _compiled_options(segmenter, params, fusion, batch_size, threads, False)
  return functools.partial(_jitted(options), segmenter, params)


def exit_fns(segmenter: segmenter_lib.Segmenter, params: Any, fusion: str, batch_size: int,
             threads: int) -> tuple[early_exit.StartFn, early_exit.StepsFn]:
  """`early_exit.run`'s (start_fn, steps_fn) with `params` bound, compiled as `segment_fn`."""
  options = _compiled_options(segmenter, params, fusion, batch_size, threads, True)
  steps = functools.partial(_jitted(options, _steps_batch), segmenter, params)
  return (functools.partial(_jitted(options, _start_batch), segmenter, params),
          lambda source, canvas, first, stop: steps(source, canvas, np.int32(first),
                                                    np.int32(stop)))
