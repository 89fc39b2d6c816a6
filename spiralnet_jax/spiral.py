"""The static geometry of the recursion: spiral block offsets and the step's receptive field."""

import math

import numpy as np

# Spiral directions in (row, col) with rows growing downwards: up, left, down, right is
# counter-clockwise as seen on screen.
_DIRECTIONS = ((-1, 0), (0, -1), (1, 0), (0, 1))


def spiral_offsets(region_shape: tuple[int, int] = (52, 58), n: int = 8) -> np.ndarray:
  """Returns the (K, 2) int32 top-left corners, in region coordinates, of the spiral's blocks."""
  height, width = region_shape
  if height < 1 or width < 1 or n < 1:
    raise ValueError(f"need a non-empty region and n >= 1, got {region_shape}, n={n}")
  rows, cols = math.ceil(height / n), math.ceil(width / n)
  # The tiling is centred on the region, so partial blocks are shared by opposite borders.
  tile_y, tile_x = (height - n * rows) // 2, (width - n * cols) // 2
  i, j = (height // 2 - tile_y) // n, (width // 2 - tile_x) // n
  visited = [(i, j)]
  run, direction = 1, 0
  while len(visited) < rows * cols:
    # Each run length is walked twice (e.g. up 1, left 1, down 2, right 2, up 3, ...).
    for _ in range(2):
      di, dj = _DIRECTIONS[direction]
      for _ in range(run):
        i, j = i + di, j + dj
        if 0 <= i < rows and 0 <= j < cols:
          visited.append((i, j))
      direction = (direction + 1) % 4
    run += 1
  blocks = np.asarray(visited, dtype=np.int32)
  return blocks * n + np.asarray([tile_y, tile_x], dtype=np.int32)


def step_kernel_sizes(num_skip_modules: int) -> tuple[int, ...]:
  """Kernel sizes of the convolutions on the step network's input-to-output path, in order.

  The single source of truth for the layer structure: `segmenter.StepNet` takes its kernel
  sizes from here, so the receptive radius below cannot drift from the network. Layout: the
  (parallel) image/mask branch conv, the merge conv, two convs per skip module, the head.
  """
  if num_skip_modules < 0:
    raise ValueError(f"num_skip_modules must be >= 0, got {num_skip_modules}")
  return (3, 3) + (3, 3) * num_skip_modules + (1,)


def receptive_radius(num_skip_modules: int) -> int:
  """Pixels around an output pixel that the step network sees (2 + 2K for K skip modules)."""
  return sum((k - 1) // 2 for k in step_kernel_sizes(num_skip_modules))


def step_dependencies(offsets: np.ndarray, region_shape: tuple[int, int], n: int,
                      radius: int) -> np.ndarray:
  """(K, K) bool: [j, i] is True iff i < j and spiral steps i and j must keep their order.

  Step k reads the mask within `radius` of its n x n block (its (n + 2r)² window) and writes
  the block's pixels inside the region. Two steps must stay ordered if either reads what the
  other writes: j reads i's output (read after write), or i reads pixels j overwrites (i must
  see them before j writes them). Steps with neither can run together without changing outputs.
  """
  offsets = np.asarray(offsets, np.int64).reshape(-1, 2)
  if n < 1 or radius < 0:
    raise ValueError(f"need n >= 1 and radius >= 0, got n={n}, radius={radius}")
  size = np.asarray(region_shape, np.int64)
  written_lo, written_hi = np.clip(offsets, 0, size), np.clip(offsets + n, 0, size)
  window_lo, window_hi = offsets - radius, offsets + n + radius
  # reads[j, i]: j's window meets i's written pixels (half-open boxes, both axes).
  reads = np.all(np.maximum(window_lo[:, None], written_lo[None])
                 < np.minimum(window_hi[:, None], written_hi[None]), axis=-1)
  # A step that writes no pixel has no effect, so what it reads does not matter.
  writes = np.all(written_lo < written_hi, axis=-1)
  reads &= writes[:, None]
  return np.tril(reads | reads.T, k=-1)


def wavefront_schedule(dependencies: np.ndarray) -> tuple[tuple[int, ...], ...]:
  """ASAP levels of a step DAG ([j, i] True: j after i, i < j): tuple of step-index tuples.

  Step j goes to level 1 + max(level of its predecessors); steps of one level depend on no
  other step of that level. The number of levels is the critical path length.
  """
  dependencies = np.asarray(dependencies, bool)
  num_steps = dependencies.shape[0]
  if dependencies.shape != (num_steps, num_steps) or np.any(np.triu(dependencies)):
    raise ValueError("dependencies must be (K, K) with [j, i] True only for i < j")
  level = np.zeros(num_steps, np.int64)
  for j in range(num_steps):
    preds = np.flatnonzero(dependencies[j])
    level[j] = 1 + (level[preds].max() if preds.size else 0)
  return tuple(tuple(int(k) for k in np.flatnonzero(level == v))
               for v in range(1, level.max(initial=0) + 1))


def spiral_rings(offsets: np.ndarray, n: int) -> np.ndarray:
  """(K,) the ring of each step's block: its Chebyshev distance, in blocks, from the first."""
  offsets = np.asarray(offsets, np.int64).reshape(-1, 2)
  rings = np.max(np.abs(offsets - offsets[0]), axis=1) // n
  if np.any(np.diff(rings) < 0):
    raise ValueError("the spiral must visit its blocks ring by ring")
  return rings


def ring_ends(offsets: np.ndarray, n: int) -> np.ndarray:
  """(R,) for ring 0..R-1, the number of steps after which the whole ring is written."""
  rings = spiral_rings(offsets, n)
  return np.searchsorted(rings, np.arange(rings.max() + 1), side="right")


def pixel_rings(offsets: np.ndarray, region_shape: tuple[int, int], n: int) -> np.ndarray:
  """(H, W) int64: the ring of the spiral block that writes each region pixel."""
  rings = spiral_rings(offsets, n)
  out = np.full(region_shape, -1, np.int64)
  for (y, x), ring in zip(np.asarray(offsets).reshape(-1, 2), rings):
    out[max(y, 0):y + n, max(x, 0):x + n] = ring
  return out
