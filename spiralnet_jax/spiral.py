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
