"""Data parallelism: the 1-D "data" mesh, each host's rows of a global batch, sharded batches."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import jax
from jax.sharding import Mesh, NamedSharding
import numpy as np


def data_mesh(devices: Optional[Sequence[Any]] = None) -> Mesh:
  """A 1-D mesh, axis "data", over `devices` (default: every device of every process)."""
  return Mesh(np.asarray(jax.devices() if devices is None else devices), ("data",))


def host_rows(sharding: NamedSharding, num_rows: int) -> slice:
  """The rows of a global batch of `num_rows` that this process's devices hold."""
  ranges = {s[0].indices(num_rows)[:2]
            for s in sharding.addressable_devices_indices_map((num_rows,)).values()}
  start, stop = min(r[0] for r in ranges), max(r[1] for r in ranges)
  if sum(b - a for a, b in ranges) != stop - start:
    raise ValueError(f"this process's rows of the batch are not contiguous: {sorted(ranges)}")
  return slice(start, stop)


def shard_batch(data: Any, items: np.ndarray, rng: Optional[np.random.Generator],
                sharding: NamedSharding) -> dict[str, jax.Array]:
  """The global batch of `items` as arrays laid out by `sharding`; this process loads its rows."""
  local = data.batch(items, rng, host_rows(sharding, len(items)))
  return {k: jax.make_array_from_process_local_data(sharding, v, (len(items),) + v.shape[1:])
          for k, v in local.items()}


def host_floats(*values: jax.Array) -> list[float]:
  """Replicated scalars as Python floats (one transfer)."""
  return [float(v) for v in jax.device_get([x.addressable_data(0) for x in values])]
