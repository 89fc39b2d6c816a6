"""spiralnet-segment: nucleus instance labels for TIFF / PNG / JPEG files, folders and globs.

    spiralnet-segment images/ --weights workdir/demo --output-dir out/
    python -m spiralnet_jax.segment 'plate1/*.tif' --weights workdir/demo --channel 0

Per input `<stem>.<ext>` it writes `<stem>_labels.tif` (uint16 instance ids, uint32 past 65,535
nuclei; 0 = background) and `<stem>_nuclei.csv` (one row per nucleus, measured on the raw input
with scikit-image); `--save-semantic` adds `<stem>_semantic.tif` (uint8, 255 = nucleus),
`--save-overlay` `<stem>_overlay.png` and `--save-rois` `<stem>_rois.zip` (one ImageJ / Fiji
polygon ROI per nucleus, named by its label id). With `--mode semantic` only the semantic mask
is written. A Zarr or OME-Zarr store (`slide.zarr`) is segmented block by block, never read
whole, into `<stem>_labels.zarr` (uint32; spiralnet_jax.segment_zarr), on the Dask cluster's
workers with `--dask` / `--scheduler`.

Bad input never becomes a silent wrong mask: every problem with one file is one line on stderr,
`spiralnet-segment: error: <file>: <reason>`, the other files go on, and the exit status is 1
if any file failed (2 for usage errors: no inputs, unusable weights). Outputs are written to
temporary files and renamed, so a failed file leaves no half-written outputs and a file's outputs
replace the old ones all together or not at all; an existing output is replaced only with
`--overwrite`, and an output that is one of the inputs never. docs/bad_input.md lists every kind
of bad input and what the user gets.

`main(argv) -> int` is the whole program, so tests run it in-process.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging as py_logging
import os
import pathlib
import sys
import warnings
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

import numpy as np

from spiralnet_jax import blocks
from spiralnet_jax import errors
from spiralnet_jax import scale
from spiralnet_jax import segment_io
from spiralnet_jax import segment_zarr
from spiralnet_jax.segment_io import InputError
from spiralnet_jax.segment_model import UsageError, load_model

if TYPE_CHECKING:
  from spiralnet_jax.models import Model

PROG = "spiralnet-segment"
# Images of at least this many pixels get a progress bar of their own (regions or tiles).
BIG_IMAGE_PIXELS = 2048 * 2048


# --- the program ---------------------------------------------------------------------------


def output_paths(path: pathlib.Path, output_dir: Optional[pathlib.Path], mode: str,
                 extras: Sequence[str] = ()) -> dict[str, pathlib.Path]:
  """{kind: path} of what one input produces (`<stem>_labels.tif`, ...); `extras`: the optional
  kinds asked for ("semantic", "overlay", "rois"; semantic mode: the overlay only)."""
  folder = output_dir if output_dir is not None else path.parent
  if segment_io.is_zarr_store(path):  # Labels only: the rest would need them all in memory.
    return {"zarr": segment_zarr.output_path(path, folder)}
  if mode == "semantic":
    kinds = ["semantic"] + [k for k in ("overlay",) if k in extras]
  else:
    kinds = ["labels", "csv"] + [k for k in ("semantic", "overlay", "rois") if k in extras]
  return {kind: folder / f"{path.stem}{segment_io.OUTPUT_SUFFIXES[kind]}" for kind in kinds}


def _check_outputs(outputs: dict[str, pathlib.Path], inputs: set[pathlib.Path],
                   planned: dict[pathlib.Path, pathlib.Path], source: pathlib.Path,
                   overwrite: bool) -> None:
  """InputError if an output is an input, another input's output, exists, or can't be written."""
  keys = []
  for out in outputs.values():
    try:
      key = segment_io.resolve(out)
    except InputError as e:
      raise InputError(f"output {out} is {e}") from e
    keys.append(key)
    if out.is_dir() and not (out.name.endswith(segment_io.OUTPUT_SUFFIXES["zarr"])
                             and segment_io.is_zarr_store(out)):
      raise InputError(f"output {out} is a directory (remove or rename it)")
    if key in inputs:
      raise InputError(f"output {out} would overwrite an input file (never allowed); use "
                       "--output-dir")
    if key in planned:
      raise InputError(f"output {out} is also the output of {planned[key]} (same name); "
                       "segment them into different --output-dir folders")
    if out.exists() and not overwrite:
      raise InputError(f"output {out} exists (pass --overwrite to replace it)")
  folder = next(iter(outputs.values())).parent
  try:
    folder.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise InputError(f"cannot create output directory {folder}: {segment_io.one_line(e)}") from e
  if not os.access(folder, os.W_OK | os.X_OK):
    raise InputError(f"output directory {folder} is not writable")
  for key in keys:
    planned[key] = source


@dataclasses.dataclass(frozen=True)
class Reading:
  """How to read the inputs: which TIFF series, which channel on which axis, what size."""

  channel: Optional[int] = None
  channel_axis: str = "auto"
  series: Optional[int] = None
  diameter: Optional[float] = None  # Of the image's nuclei (px); None: not rescaled.
  block: int = blocks.BLOCK  # Zarr inputs: core and context of a block (px).
  margin: int = blocks.MARGIN

  @classmethod
  def from_args(cls, args: argparse.Namespace) -> "Reading":
    """The reading the command line asks for."""
    return cls(args.channel, args.channel_axis, args.series, args.diameter, args.block,
               args.margin)


def segment_file(path: pathlib.Path, model: Model, outputs: dict[str, pathlib.Path],
                 reading: Reading, progress: Optional[Callable[[int, int], None]] = None,
                 note: Callable[[str], None] = lambda line: None,
                 map_fn: Optional[blocks.MapFn] = None) -> int:
  """Reads, segments and writes one file (a Zarr store's blocks through `map_fn`, default in
  this process); returns its nucleus count; InputError if bad."""
  from spiralnet_jax import figures  # pylint: disable=g-import-not-at-top
  from spiralnet_jax import predict  # pylint: disable=g-import-not-at-top
  if "zarr" in outputs:
    return segment_zarr.segment_store(path, model, outputs["zarr"], reading, progress, note,
                                      map_fn)
  read = segment_io.read_image(path, reading.series)
  if read.note:
    note(read.note)
  raw = segment_io.select_channel(read.array, reading.channel, reading.channel_axis, read.axes)
  try:
    image = predict.prepare_image(raw, model.percentiles)
  except ValueError as e:
    raise InputError(segment_io.one_line(e)) from e
  bar = progress if image.size >= BIG_IMAGE_PIXELS else None
  if reading.diameter is None:
    semantic, instances = model.predict(image, bar)
  else:
    semantic, instances = scale.at_diameter(lambda x: model.predict(x, bar), image,
                                            reading.diameter, model.nucleus_diameter)
  count = int(instances.max(initial=0))
  try:
    with segment_io.atomic_outputs() as temp_for:
      if "labels" in outputs:
        segment_io.write_tiff(temp_for(outputs["labels"]),
                              instances.astype(segment_io.label_dtype(count)))
      if "semantic" in outputs:
        segment_io.write_tiff(temp_for(outputs["semantic"]),
                              semantic.astype(np.uint8) * np.uint8(255))
      if "overlay" in outputs:
        rgb = (figures.instance_overlay(image, instances) if "labels" in outputs
               else figures.semantic_overlay(image, semantic))
        segment_io.write_png(temp_for(outputs["overlay"]), np.round(rgb * 255).astype(np.uint8))
      if "csv" in outputs:
        segment_io.write_csv(temp_for(outputs["csv"]), segment_io.measurements(instances, raw))
      if "rois" in outputs:
        segment_io.write_rois(temp_for(outputs["rois"]), instances)
  except OSError as e:
    raise InputError(f"cannot write outputs: {segment_io.one_line(e)}") from e
  return count if "labels" in outputs else int(semantic.sum() > 0)


def file_failure(path: pathlib.Path, model: Model, outputs: dict[str, pathlib.Path],
                 reading: Reading, progress: Optional[Callable[[int, int], None]] = None,
                 note: Callable[[str], None] = lambda line: None,
                 map_fn: Optional[blocks.MapFn] = None) -> Optional[str]:
  """`segment_file`, returning None when it succeeds, else the one-line reason it failed."""
  try:
    segment_file(path, model, outputs, reading, progress, note, map_fn)
  except InputError as e:
    return str(e)
  except MemoryError:
    return "out of memory (try a smaller --batch-size)"
  return None


def build_parser() -> argparse.ArgumentParser:
  """The command line."""
  parser = argparse.ArgumentParser(
      prog=PROG, description="Segment nuclei in TIFF / PNG / JPEG images and Zarr / OME-Zarr "
      "stores with SpiralNet (or the U-Net baseline): instance label TIFFs (Zarr for Zarr "
      "inputs) and per-nucleus CSV measurements.",
      epilog="Exit status: 0 all files done, 1 some file failed (each failure is one line on "
      "stderr), 2 usage error (no inputs, unusable weights).")
  parser.add_argument("inputs", nargs="+", metavar="INPUT",
                      help="image files, Zarr stores, folders (their .tif/.tiff/.png/.jpg/.jpeg "
                      "files and Zarr stores) or glob patterns such as 'plate1/*.tif'")
  parser.add_argument("--weights", default=None, metavar="DIR",
                      help="a train.py workdir holding config.json and checkpoints/, or "
                      "exported weights (tools/export_weights.py) (default: the packaged "
                      "BBBC039 weights)")
  parser.add_argument("--model", choices=("spiralnet", "unet"), default="spiralnet")
  parser.add_argument("--mode", choices=("instance", "semantic"), default="instance",
                      help="instance: <stem>_labels.tif + <stem>_nuclei.csv; semantic: "
                      "<stem>_semantic.tif only")
  parser.add_argument("--output-dir", type=pathlib.Path, default=None,
                      help="where outputs go (created if missing; default: next to each input)")
  parser.add_argument("--channel", type=int, default=None, metavar="C",
                      help="the channel to segment in a multi-channel or RGB file")
  parser.add_argument("--channel-axis", choices=("auto", "first", "last"), default="auto",
                      help="where the channels are: (C, H, W) first, (H, W, C) last, or auto "
                      "(as the file says: a TIFF's planes, a PNG's colours; an error when "
                      "it does not say)")
  parser.add_argument("--series", type=int, default=None, metavar="N",
                      help="the series to read from a TIFF that holds several (default 0, "
                      "with a note naming the others)")
  parser.add_argument("--diameter", type=float, default=None, metavar="PX",
                      help="the typical nucleus diameter in your images (px): they are "
                      "rescaled so their nuclei match the training data's (28.25 px for the "
                      "shipped BBBC039 model), and the labels brought back to the input's "
                      "shape (default: no rescaling)")
  parser.add_argument("--batch-size", type=int, default=0, metavar="N",
                      help="regions per segmenter call (bounds memory; default: the workdir "
                      "config's predict.region_batch_size)")
  parser.add_argument("--save-semantic", action="store_true",
                      help="also write <stem>_semantic.tif (uint8, 255 = nucleus)")
  parser.add_argument("--save-rois", action="store_true",
                      help="also write <stem>_rois.zip: one ImageJ / Fiji polygon ROI per "
                      "nucleus, named by its label id (instance mode)")
  parser.add_argument("--save-overlay", action="store_true",
                      help="also write <stem>_overlay.png (nuclei tinted over the image)")
  parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
  parser.add_argument("--recursive", action="store_true",
                      help="descend into subfolders of folder inputs (and ** in patterns)")
  _add_scale_out_options(parser)
  parser.add_argument("--quiet", action="store_true", help="no progress bars or summary")
  return parser


def _add_scale_out_options(parser: argparse.ArgumentParser) -> None:
  """Huge images (Zarr, block by block) and many files (Dask)."""
  parser.add_argument("--block", type=int, default=blocks.BLOCK, metavar="PX",
                      help="Zarr inputs: the side of a block's core (px); each block is "
                      f"predicted with --margin px of context (default {blocks.BLOCK})")
  parser.add_argument("--margin", type=int, default=blocks.MARGIN, metavar="PX",
                      help="Zarr inputs: context around a block's core (px; default "
                      f"{blocks.MARGIN}: a region and its continuation moves)")
  parser.add_argument("--dask", action="store_true",
                      help="spread the files over the workers of a Dask LocalCluster on this "
                      "machine (pip install -e \".[dask]\")")
  parser.add_argument("--workers", type=int, default=2, metavar="N",
                      help="LocalCluster worker processes for --dask (default 2)")
  parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                      help="spread the files over the workers of the Dask scheduler at ADDRESS "
                      "(e.g. tcp://host:8786; a SLURM cluster through dask-jobqueue)")


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Runs the program; returns the exit status (0 ok, 1 some file failed, 2 usage error)."""
  parser = build_parser()
  try:
    args = parser.parse_args(argv)
  except SystemExit as e:  # argparse exits on --help (0) and on usage errors (2).
    return int(e.code or 0)

  def error(subject: Any, reason: str) -> None:
    write_line(f"{PROG}: error: {subject}: {reason}")

  if args.batch_size < 0:
    error("--batch-size", "must be ≥ 1 (or 0, the default: the model's own batch size)")
    return 2
  for name in ("channel", "series"):
    if getattr(args, name) is not None and getattr(args, name) < 0:
      error(f"--{name}", "must be ≥ 0")
      return 2
  for name, least in (("workers", 1), ("block", 1), ("margin", 0)):
    if getattr(args, name) < least:
      error(f"--{name}", f"must be ≥ {least}")
      return 2
  files, failures = segment_io.find_inputs(args.inputs, args.recursive)
  for spec, reason in failures:
    error(spec, reason)
  if not files:
    error("inputs", "no input images found")
    return 2
  absl_logger = py_logging.getLogger("absl")
  level = absl_logger.level
  absl_logger.setLevel(py_logging.ERROR)  # Orbax's restore chatter is not for end users.
  try:
    try:
      model = _load_model_saying_fallbacks(args)
      if args.diameter is not None:
        _check_diameter(args.diameter, model)
    except UsageError as e:
      write_line(f"{PROG}: error: {e}")
      return 2
    if not (args.dask or args.scheduler):
      return _run(args, files, model, error, num_failed=len(failures))
    from spiralnet_jax import segment_dask  # pylint: disable=g-import-not-at-top
    try:
      return segment_dask.run(args, files, model, error, num_failed=len(failures))
    except UsageError as e:
      write_line(f"{PROG}: error: {e}")
      return 2
  finally:
    absl_logger.setLevel(level)


def _load_model_saying_fallbacks(args: argparse.Namespace) -> Model:
  """`load_model`, with a warning line on stderr for each stage loaded from an older checkpoint
  than the newest (a damaged newest one): the user must hear that these are other weights."""
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always", errors.CheckpointFallbackWarning)
    model = load_model(args.weights, args.model, args.batch_size)
  for w in caught:
    if issubclass(w.category, errors.CheckpointFallbackWarning):
      write_line(f"{PROG}: warning: {args.weights}: {w.message}")
    else:
      warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
  return model


def _check_diameter(diameter: float, model: Model) -> None:
  """UsageError unless the model can be run at `diameter`."""
  try:
    scale.scale_factor(diameter, model.nucleus_diameter)
  except ValueError as e:
    raise UsageError(str(e)) from e


def planned_outputs(args: argparse.Namespace, files: list[pathlib.Path],
                    error: Callable[[Any, str], None],
                    num_failed: int) -> tuple[list[tuple[pathlib.Path, dict]], int]:
  """([(input, its outputs)] of the files whose outputs may be written, failures so far)."""
  extras = [kind for kind in ("semantic", "overlay", "rois") if getattr(args, f"save_{kind}")]
  inputs = {p.resolve() for p in files}
  planned: dict[pathlib.Path, pathlib.Path] = {}
  plans = []
  for path in files:
    outputs = output_paths(path, args.output_dir, args.mode, extras)
    try:
      if "zarr" in outputs and args.mode == "semantic":
        raise InputError("--mode semantic is not supported for Zarr input (it writes "
                         "<stem>_labels.zarr in instance mode)")
      if "zarr" in outputs and extras:
        write_line(f"{PROG}: note: {path}: a Zarr input gives <stem>_labels.zarr only (no "
                   "CSV, semantic mask, overlay or ROIs)")
      _check_outputs(outputs, inputs, planned, path, args.overwrite)
      plans.append((path, outputs))
    except InputError as e:
      error(path, str(e))
      num_failed += 1
  return plans, num_failed


def _run(args: argparse.Namespace, files: list[pathlib.Path], model: Model,
         error: Callable[[Any, str], None], num_failed: int) -> int:
  """Segments every file; returns the exit status (`num_failed` inputs already failed)."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  plans, num_failed = planned_outputs(args, files, error, num_failed)
  reading = Reading.from_args(args)
  done = 0
  with tqdm(plans, desc="files", unit="file", disable=args.quiet, file=sys.stderr,
            dynamic_ncols=True) as bar:
    for path, outputs in bar:
      bar.set_postfix_str(path.name, refresh=False)
      region_bar = None

      def progress(count: int, total: int) -> None:
        nonlocal region_bar
        if region_bar is None:
          unit = ("block" if "zarr" in outputs else "region" if args.model == "spiralnet"
                  else "tile")
          region_bar = tqdm(total=total, desc=f"  {unit}s", unit=unit, leave=False,
                            disable=args.quiet, file=sys.stderr, dynamic_ncols=True)
        region_bar.update(count - region_bar.n)

      try:
        reason = file_failure(path, model, outputs, reading, progress,
                              note=lambda line: write_line(f"{PROG}: note: {path}: {line}"))
      finally:
        if region_bar is not None:
          region_bar.close()
      if reason is None:
        done += 1
      else:
        error(path, reason)
        num_failed += 1
  if not args.quiet:
    write_line(f"{PROG}: {done} segmented, {num_failed} failed")
  return 1 if num_failed else 0


def write_line(line: str) -> None:
  """A line on stderr that does not tear an active progress bar."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  tqdm.write(line, file=sys.stderr)


if __name__ == "__main__":
  sys.exit(main())
