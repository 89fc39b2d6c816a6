"""spiralnet-segment on a Dask cluster: the input files spread over its workers.

    spiralnet-segment plate/ --dask --workers 4            # a LocalCluster on this machine
    spiralnet-segment plate/ --scheduler tcp://host:8786   # a running scheduler (e.g. SLURM)

The client plans every file's outputs exactly as the one-process run does (an existing output,
an output that is an input, two inputs with one output name: the same one-line errors), then
the workers segment whole files, each with its own copy of the model (loaded once per worker
process), and the client reports each file as it finishes under one progress bar. A Zarr
store is cut into blocks that the workers predict, each reading its own window from the store
(`blocks.dask_map`), while the client paints their instances into `<stem>_labels.zarr`. The files
written are the one-process run's, byte for byte (tests/test_segment_dask.py). For a SLURM
cluster, start the scheduler and workers with dask-jobqueue (`SLURMCluster(...).scale(jobs=N)`,
then pass its `scheduler_address`); the workers need this package and the same file system.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import pathlib
import sys
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

from spiralnet_jax import segment

if TYPE_CHECKING:
  from spiralnet_jax import models

Result = tuple[str, list[str]]  # ("ok" | "error", notes or the one error line).


@functools.lru_cache(maxsize=2)
def _worker_model(weights: Optional[str], model: str, batch_size: int) -> models.Model:
  """The model, loaded once per worker process (the client has already checked it loads)."""
  return segment.load_model(weights, model, batch_size)


def segment_task(path: str, outputs: dict[str, str], reading: segment.Reading,
                 weights: Optional[str], model: str, batch_size: int) -> Result:
  """Runs on a worker: segments one file into its planned outputs."""
  notes: list[str] = []
  reason = segment.file_failure(pathlib.Path(path), _worker_model(weights, model, batch_size),
                                {k: pathlib.Path(v) for k, v in outputs.items()}, reading,
                                note=notes.append)
  return ("ok", notes) if reason is None else ("error", [reason])


def _connect(args: argparse.Namespace) -> tuple[Any, Any]:
  """(client, cluster or None): the scheduler at --scheduler, else a new LocalCluster."""
  try:
    from distributed import Client  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise segment.UsageError("--dask and --scheduler need Dask's distributed scheduler: "
                             "pip install -e \".[dask]\"") from e
  if args.scheduler:
    try:
      return Client(args.scheduler, timeout="20s"), None
    except (OSError, TimeoutError, ValueError) as e:
      raise segment.UsageError(f"--scheduler {args.scheduler}: cannot reach a Dask scheduler "
                               f"there ({type(e).__name__}: {e})") from e
  cluster = local_cluster(args.workers)
  return Client(cluster), cluster


def local_cluster(workers: int) -> Any:
  """A LocalCluster of `workers` single-threaded worker processes, fit for JAX prediction.

  Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536; any explicit glibc malloc
  threshold switches off glibc's adaptive mmap threshold, so every large NumPy temporary is
  mmap'd and unmapped afresh: measured here, a 520×1392 image took 30.4 s in such a worker (19 s
  of it in the kernel) against 10.8 s without it and 10.3 s in-process (benchmarks/README.md).
  Workers started elsewhere want the same, from a Dask config file (the README's).
  """
  import dask  # pylint: disable=g-import-not-at-top
  from distributed import LocalCluster  # pylint: disable=g-import-not-at-top
  with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
    return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                        dashboard_address=None)


def run(args: argparse.Namespace, files: list[pathlib.Path], model: models.Model,
        error: Callable[[Any, str], None], num_failed: int) -> int:
  """Segments every file on the cluster; returns the exit status (as `segment._run`). Image
  files are tasks of their own; a Zarr store's blocks are tasks, `model` (the client's) sent
  with them, and the store's labels are painted by this process."""
  from distributed import as_completed  # pylint: disable=g-import-not-at-top
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  from spiralnet_jax import blocks  # pylint: disable=g-import-not-at-top
  client, cluster = _connect(args)  # First: a scheduler that cannot be reached is exit 2.
  plans, num_failed = segment.planned_outputs(args, files, error, num_failed)
  stores = [(path, outputs) for path, outputs in plans if "zarr" in outputs]
  reading = segment.Reading.from_args(args)
  done = 0
  try:
    futures = {client.submit(segment_task, str(path), {k: str(v) for k, v in outputs.items()},
                             reading, args.weights, args.model, args.batch_size,
                             key=f"spiralnet-segment-{i}", pure=False): path
               for i, (path, outputs) in enumerate(plans) if "zarr" not in outputs}
    with tqdm(total=len(plans), desc="files", unit="file", disable=args.quiet,
              file=sys.stderr, dynamic_ncols=True) as bar:
      results = ((path, segment.file_failure(
          path, model, outputs, reading, note=_say(path), map_fn=blocks.dask_map(client)))
                 for path, outputs in stores)
      for path, reason in itertools.chain(results, _file_results(futures, as_completed)):
        if reason is None:
          done += 1
        else:
          error(path, reason)
          num_failed += 1
        bar.update(1)
  finally:
    client.close()
    if cluster is not None:
      cluster.close()
  if not args.quiet:
    segment.write_line(f"{segment.PROG}: {done} segmented, {num_failed} failed")
  return 1 if num_failed else 0


def _say(path: pathlib.Path) -> Callable[[str], None]:
  return lambda line: segment.write_line(f"{segment.PROG}: note: {path}: {line}")


def _file_results(futures: dict, as_completed: Callable) -> Iterator[tuple[pathlib.Path, Any]]:
  """(path, None or the reason it failed) of each file task as it finishes, notes said."""
  for future in as_completed(futures):
    path, (status, lines) = futures[future], future.result()
    if status == "ok":
      for line in lines:
        _say(path)(line)
      yield path, None
    else:
      yield path, lines[0]
