"""spiralnet-segment: nucleus instance labels for TIFF / PNG / JPEG files, folders and globs.

    spiralnet-segment images/ --weights workdir/demo --output-dir out/
    python -m spiralnet_jax.segment 'plate1/*.tif' --weights workdir/demo --channel 0

Per input `<stem>.<ext>` it writes `<stem>_labels.tif` (uint16 instance ids, uint32 past 65,535
nuclei; 0 = background) and `<stem>_nuclei.csv` (one row per nucleus, measured on the raw input
with scikit-image); `--save-semantic` adds `<stem>_semantic.tif` (uint8, 255 = nucleus) and
`--save-overlay` `<stem>_overlay.png`. With `--mode semantic` only the semantic mask is written.

Bad input never becomes a silent wrong mask: every problem with one file is one line on stderr,
`spiralnet-segment: error: <file>: <reason>`, the other files go on, and the exit status is 1
if any file failed (2 for usage errors: no inputs, unusable weights). Outputs are written to a
temporary file and renamed, so a failed file leaves no half-written outputs; an existing output
is replaced only with `--overwrite`, and an output that is one of the inputs never.

`main(argv) -> int` is the whole program, so tests run it in-process.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import glob
import logging as py_logging
import os
import pathlib
import secrets
import sys
from typing import Any, Callable, Optional, Sequence

import numpy as np

PROG = "spiralnet-segment"
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
TIFF_SUFFIXES = (".tif", ".tiff")
# What this program writes, by output kind; a folder or glob never picks these up as inputs.
OUTPUT_SUFFIXES = {"labels": "_labels.tif", "semantic": "_semantic.tif",
                   "overlay": "_overlay.png", "csv": "_nuclei.csv"}
CSV_FIELDS = ("label", "area", "centroid_y", "centroid_x", "bbox_min_row", "bbox_min_col",
              "bbox_max_row", "bbox_max_col", "mean_intensity")
# Images of at least this many pixels get a progress bar of their own (regions or tiles).
BIG_IMAGE_PIXELS = 2048 * 2048


class UsageError(Exception):
  """A problem with the whole run (exit status 2)."""


class InputError(Exception):
  """A problem with one input file (reported, the run goes on, exit status 1)."""


def default_weights() -> pathlib.Path:
  """The weights shipped with the package (spiralnet_jax/weights/bbbc039_cpu)."""
  from spiralnet_jax import pretrained  # pylint: disable=g-import-not-at-top
  path = pretrained.weights_dir()
  if not pretrained.is_weights_dir(path):
    raise UsageError(f"the packaged weights are missing from {path}; reinstall the package or "
                     "pass --weights WORKDIR (a train.py workdir)")
  return path


# --- inputs --------------------------------------------------------------------------------


def _is_image_name(path: pathlib.Path) -> bool:
  return path.suffix.lower() in IMAGE_SUFFIXES


def _is_output_name(path: pathlib.Path) -> bool:
  return any(path.name.endswith(suffix) for suffix in OUTPUT_SUFFIXES.values())


def _candidates(paths: Sequence[pathlib.Path]) -> list[pathlib.Path]:
  """Image files among `paths` (by extension, any case), minus this program's own outputs."""
  return sorted(p for p in paths
                if p.is_file() and _is_image_name(p) and not _is_output_name(p))


def find_inputs(specs: Sequence[str],
                recursive: bool = False) -> tuple[list[pathlib.Path], list[tuple[str, str]]]:
  """(input files, [(spec, reason)] failures) from files, folders and glob patterns.

  A named file is taken as is (a wrong one fails later, when read); a folder gives its image
  files (sorted; with `recursive`, its subfolders' too); a pattern (*, ?, [) is expanded here
  as well, for shells that do not. Folders and patterns skip `*_labels.tif` and the other
  outputs of this program. Duplicates (same resolved path) are dropped.
  """
  files, failures, seen = [], [], set()
  for spec in specs:
    path = pathlib.Path(spec)
    if path.is_dir():
      found = _candidates(list(path.rglob("*") if recursive else path.iterdir()))
      if not found:
        failures.append((spec, "folder holds no .tif/.tiff/.png/.jpg/.jpeg images"))
    elif path.exists() or path.is_symlink():
      found = [path]
    elif glob.has_magic(spec):
      found = _candidates([pathlib.Path(p) for p in glob.glob(spec, recursive=recursive)])
      if not found:
        failures.append((spec, "no image files match this pattern"))
    else:
      failures.append((spec, "no such file or directory"))
      found = []
    for p in found:
      key = p.resolve()
      if key not in seen:
        seen.add(key)
        files.append(p)
  return files, failures


def read_image(path: pathlib.Path) -> np.ndarray:
  """The pixel array of a TIFF (tifffile) or PNG / JPEG (Pillow via imageio) file."""
  suffix = path.suffix.lower()
  if suffix not in IMAGE_SUFFIXES:
    raise InputError(f"not an image file (expected {', '.join(IMAGE_SUFFIXES)})")
  try:
    if suffix in TIFF_SUFFIXES:
      import tifffile  # pylint: disable=g-import-not-at-top
      return np.asarray(tifffile.imread(path))
    import imageio.v3 as iio  # pylint: disable=g-import-not-at-top
    return np.asarray(iio.imread(path, plugin="pillow"))
  except (OSError, ValueError, RuntimeError, SyntaxError, EOFError, MemoryError) as e:
    kind = "TIFF" if suffix in TIFF_SUFFIXES else suffix[1:].upper()
    raise InputError(f"cannot read as {kind} (unreadable, truncated or not an image): "
                     f"{_one_line(e)}") from e
  except Exception as e:  # pylint: disable=broad-except
    # tifffile / zlib / Pillow raise their own types (TiffFileError, zlib.error, ...).
    raise InputError(f"cannot read (unreadable, truncated or not an image): "
                     f"{_one_line(e)}") from e


def select_channel(array: np.ndarray, channel: Optional[int],
                   channel_axis: str = "auto") -> np.ndarray:
  """The 2-D image to segment: the array itself, or channel `channel` of a 3-D array.

  Size-1 leading or trailing axes (e.g. a 1-plane TIFF stack) are dropped first. A 3-D array
  needs `channel`; its channel axis is `channel_axis` ("first" (C, H, W), "last" (H, W, C)) or,
  with "auto", the shorter of the two (ties: last).
  """
  shape = array.shape
  while array.ndim > 2 and array.shape[0] == 1:
    array = array[0]
  while array.ndim > 2 and array.shape[-1] == 1:
    array = array[..., 0]
  if array.ndim == 2:
    if channel not in (None, 0):
      raise InputError(f"image is 2-D {tuple(shape)}; it has no channel {channel}")
    return array
  if array.ndim != 3:
    raise InputError(f"expected a 2-D image or a 3-D multi-channel array, got shape "
                     f"{tuple(shape)}")
  if channel is None:
    raise InputError(f"array of shape {tuple(shape)} is a 3-D stack or multi-channel (e.g. RGB) "
                     "image; pass --channel C to pick the channel to segment")
  if channel_axis == "auto":
    axis = 0 if array.shape[0] < array.shape[-1] else -1
  else:
    axis = 0 if channel_axis == "first" else -1
  if not 0 <= channel < array.shape[axis]:
    raise InputError(f"--channel {channel} is out of range: shape {tuple(shape)} has "
                     f"{array.shape[axis]} channels on its {'first' if axis == 0 else 'last'} "
                     "axis")
  return np.take(array, channel, axis=axis)


# --- outputs -------------------------------------------------------------------------------


def label_dtype(max_label: int) -> np.dtype:
  """uint16 while every id fits, else uint32."""
  return np.dtype(np.uint16 if max_label < 2**16 else np.uint32)


def measurements(labels: np.ndarray, intensity: np.ndarray) -> list[dict[str, Any]]:
  """One row per nucleus (CSV_FIELDS) via skimage.measure.regionprops_table.

  Centroids are (row, column) pixel coordinates; bounding boxes are [min, max) (max exclusive,
  scikit-image's convention); mean intensity is over the raw input pixels.
  """
  from skimage import measure  # pylint: disable=g-import-not-at-top
  intensity = np.asarray(intensity)
  if intensity.dtype == bool:
    intensity = intensity.astype(np.uint8)
  table = measure.regionprops_table(
      np.asarray(labels), intensity_image=intensity,
      properties=("label", "area", "centroid", "bbox", "intensity_mean"))
  columns = [table["label"], table["area"], table["centroid-0"], table["centroid-1"],
             table["bbox-0"], table["bbox-1"], table["bbox-2"], table["bbox-3"],
             table["intensity_mean"]]
  kinds = (int, int, float, float, int, int, int, int, float)
  return [{name: kind(value) for name, kind, value in zip(CSV_FIELDS, kinds, row)}
          for row in zip(*columns)]


def _write_tiff(path: pathlib.Path, array: np.ndarray) -> None:
  import tifffile  # pylint: disable=g-import-not-at-top
  # Deflate: label images compress ~50×; every TIFF reader (Fiji, scikit-image) handles it.
  tifffile.imwrite(path, array, compression="zlib")


def _write_png(path: pathlib.Path, rgb: np.ndarray) -> None:
  import imageio.v3 as iio  # pylint: disable=g-import-not-at-top
  iio.imwrite(path, rgb, plugin="pillow", extension=".png")


def _write_csv(path: pathlib.Path, rows: Sequence[dict[str, Any]]) -> None:
  with open(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
    writer.writeheader()
    writer.writerows(rows)


@contextlib.contextmanager
def _atomic_outputs():
  """Collects (final path, temporary path) pairs; renames all on success, removes all on error."""
  pending: list[tuple[pathlib.Path, pathlib.Path]] = []

  def temp_for(final: pathlib.Path) -> pathlib.Path:
    # Created here (not by tempfile.mkstemp, whose files are private: 0600) so that the output
    # gets the usual permissions from the umask; the suffix tells writers the format.
    temp = final.with_name(f".{final.name}.{os.getpid()}-{secrets.token_hex(4)}{final.suffix}")
    temp.touch(exist_ok=False)
    pending.append((final, temp))
    return temp

  try:
    yield temp_for
    for final, temp in pending:
      os.replace(temp, final)
  finally:
    for _, temp in pending:
      with contextlib.suppress(OSError):
        temp.unlink()


# --- models --------------------------------------------------------------------------------


def _checkpoint_shapes(step_dir: pathlib.Path) -> dict[str, tuple[int, ...]]:
  """{parameter path: shape} of a StandardSave'd train state, from its metadata only."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  metadata = ocp.StandardCheckpointer().metadata(step_dir / "default").item_metadata.tree
  leaves = jax.tree_util.tree_flatten_with_path(metadata["params"])[0]
  return {jax.tree_util.keystr(k): tuple(v.shape) for k, v in leaves}


def _check_stage(workdir: pathlib.Path, stage: str, config: Any) -> None:
  """UsageError unless the newest `stage` checkpoint exists and fits the config's model."""
  import jax  # pylint: disable=g-import-not-at-top
  from spiralnet_jax import train_lib  # pylint: disable=g-import-not-at-top
  where = train_lib.checkpoint_dir(workdir, stage)
  steps = train_lib.checkpoint_steps(workdir, stage)
  if not steps:
    raise UsageError(f"{workdir}: no {stage} checkpoint (expected {where}/<step>/); "
                     "is this a train.py workdir that trained that stage?")
  expected = jax.tree_util.tree_flatten_with_path(train_lib.abstract_state(stage, config).params)
  expected = {jax.tree_util.keystr(k): tuple(v.shape) for k, v in expected[0]}
  try:
    stored = _checkpoint_shapes(where / str(steps[-1]))
  except Exception as e:  # pylint: disable=broad-except
    raise UsageError(f"{workdir}: cannot read the {stage} checkpoint step {steps[-1]}: "
                     f"{_one_line(e)}") from e
  for name in sorted(set(expected) | set(stored)):
    if expected.get(name) != stored.get(name):
      raise UsageError(f"{workdir}: {stage} weights do not fit its config.json: params{name} "
                       f"has shape {stored.get(name)} in the checkpoint but "
                       f"{expected.get(name)} in the model the config builds")


@dataclasses.dataclass
class Model:
  """A loaded model as one function: (prepared image, progress) -> (semantic, instances)."""

  name: str
  predict: Callable[..., tuple[np.ndarray, np.ndarray]]
  percentiles: tuple[float, float]  # The normalisation the model was trained with.


def load_model(weights: Optional[str], model: str, batch_size: int = 0) -> Model:
  """The SpiralNet or U-Net model of a train.py workdir; UsageError with one line if unusable."""
  from spiralnet_jax import predict  # pylint: disable=g-import-not-at-top
  from spiralnet_jax import train_lib  # pylint: disable=g-import-not-at-top
  from spiralnet_jax import pretrained  # pylint: disable=g-import-not-at-top
  workdir = pathlib.Path(weights) if weights else default_weights()
  if not workdir.is_dir():
    raise UsageError(f"weights directory {workdir} does not exist (pass --weights WORKDIR, a "
                     "train.py workdir)")
  if pretrained.is_weights_dir(workdir):
    return _exported_model(workdir, model, batch_size)
  try:
    config = train_lib.load_config(workdir)
  except (OSError, ValueError) as e:
    raise UsageError(f"{workdir}: not a train.py workdir: {_one_line(e)}") from e
  if batch_size > 0:
    config.predict.region_batch_size = batch_size
  stages = ("scorer", "segmenter") if model == "spiralnet" else ("unet",)
  for stage in stages:
    _check_stage(workdir, stage, config)
  try:
    if model == "spiralnet":
      predictor = predict.Predictor.from_workdir(workdir, config)
      return Model(model, lambda image, progress=None: predict.predict(
          predictor, image, progress, prepared=True), predict.percentiles(config))
    unet = predict.UNetPredictor.from_workdir(workdir, config)
    return Model(model, lambda image, progress=None: predict.predict_unet(
        unet, image, progress, prepared=True), predict.percentiles(config))
  except Exception as e:  # pylint: disable=broad-except
    raise UsageError(f"{workdir}: cannot load the {model} weights: {_one_line(e)}") from e


def _exported_model(path: pathlib.Path, model: str, batch_size: int) -> Model:
  """The SpiralNet of an exported weights directory (`spiralnet_jax.pretrained`)."""
  from spiralnet_jax import predict  # pylint: disable=g-import-not-at-top
  if model != "spiralnet":
    raise UsageError(f"{path}: exported weights hold SpiralNet only; pass --weights WORKDIR "
                     f"(a train.py workdir) for --model {model}")
  try:
    predictor = predict.Predictor.from_weights(path)
  except Exception as e:  # pylint: disable=broad-except
    raise UsageError(f"{path}: cannot load the exported weights: {_one_line(e)}") from e
  if batch_size > 0:
    predictor.config.predict.region_batch_size = batch_size
  return Model(model, lambda image, progress=None: predict.predict(
      predictor, image, progress, prepared=True), predict.percentiles(predictor.config))


# --- the program ---------------------------------------------------------------------------


def _one_line(error: BaseException) -> str:
  """An exception as one line: its first non-empty line, else its type."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return lines[0] if lines else type(error).__name__


def output_paths(path: pathlib.Path, output_dir: Optional[pathlib.Path], mode: str,
                 save_semantic: bool, save_overlay: bool) -> dict[str, pathlib.Path]:
  """{kind: path} of what one input produces (`<stem>_labels.tif`, ...)."""
  folder = output_dir if output_dir is not None else path.parent
  if mode == "semantic":
    kinds = ["semantic"] + (["overlay"] if save_overlay else [])
  else:
    kinds = (["labels", "csv"] + (["semantic"] if save_semantic else [])
             + (["overlay"] if save_overlay else []))
  return {kind: folder / f"{path.stem}{OUTPUT_SUFFIXES[kind]}" for kind in kinds}


def _check_outputs(outputs: dict[str, pathlib.Path], inputs: set[pathlib.Path],
                   planned: dict[pathlib.Path, pathlib.Path], source: pathlib.Path,
                   overwrite: bool) -> None:
  """InputError if an output is an input, another input's output, exists, or can't be written."""
  for out in outputs.values():
    key = out.resolve()
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
    raise InputError(f"cannot create output directory {folder}: {_one_line(e)}") from e
  if not os.access(folder, os.W_OK | os.X_OK):
    raise InputError(f"output directory {folder} is not writable")
  for out in outputs.values():
    planned[out.resolve()] = source


def segment_file(path: pathlib.Path, model: Model, outputs: dict[str, pathlib.Path],
                 channel: Optional[int], channel_axis: str,
                 progress: Optional[Callable[[int, int], None]] = None) -> int:
  """Reads, segments and writes one file; returns its nucleus count; InputError if bad."""
  from spiralnet_jax import figures  # pylint: disable=g-import-not-at-top
  from spiralnet_jax import predict  # pylint: disable=g-import-not-at-top
  raw = select_channel(read_image(path), channel, channel_axis)
  try:
    image = predict.prepare_image(raw, model.percentiles)
  except ValueError as e:
    raise InputError(_one_line(e)) from e
  semantic, instances = model.predict(image, progress if image.size >= BIG_IMAGE_PIXELS else None)
  count = int(instances.max(initial=0))
  try:
    with _atomic_outputs() as temp_for:
      if "labels" in outputs:
        _write_tiff(temp_for(outputs["labels"]), instances.astype(label_dtype(count)))
      if "semantic" in outputs:
        _write_tiff(temp_for(outputs["semantic"]), semantic.astype(np.uint8) * np.uint8(255))
      if "overlay" in outputs:
        rgb = (figures.instance_overlay(image, instances) if "labels" in outputs
               else figures.semantic_overlay(image, semantic))
        _write_png(temp_for(outputs["overlay"]), np.round(rgb * 255).astype(np.uint8))
      if "csv" in outputs:
        _write_csv(temp_for(outputs["csv"]), measurements(instances, raw))
  except OSError as e:
    raise InputError(f"cannot write outputs: {_one_line(e)}") from e
  return count if "labels" in outputs else int(semantic.sum() > 0)


def build_parser() -> argparse.ArgumentParser:
  """The command line."""
  parser = argparse.ArgumentParser(
      prog=PROG, description="Segment nuclei in TIFF / PNG / JPEG images with SpiralNet (or "
      "the U-Net baseline): instance label TIFFs and per-nucleus CSV measurements.",
      epilog="Exit status: 0 all files done, 1 some file failed (each failure is one line on "
      "stderr), 2 usage error (no inputs, unusable weights).")
  parser.add_argument("inputs", nargs="+", metavar="INPUT",
                      help="image files, folders (their .tif/.tiff/.png/.jpg/.jpeg files) or "
                      "glob patterns such as 'plate1/*.tif'")
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
                      "(the shorter of the two)")
  parser.add_argument("--batch-size", type=int, default=0, metavar="N",
                      help="regions per segmenter call (bounds memory; default: the workdir "
                      "config's predict.region_batch_size)")
  parser.add_argument("--save-semantic", action="store_true",
                      help="also write <stem>_semantic.tif (uint8, 255 = nucleus)")
  parser.add_argument("--save-overlay", action="store_true",
                      help="also write <stem>_overlay.png (nuclei tinted over the image)")
  parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
  parser.add_argument("--recursive", action="store_true",
                      help="descend into subfolders of folder inputs (and ** in patterns)")
  parser.add_argument("--quiet", action="store_true", help="no progress bars or summary")
  return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Runs the program; returns the exit status (0 ok, 1 some file failed, 2 usage error)."""
  parser = build_parser()
  try:
    args = parser.parse_args(argv)
  except SystemExit as e:  # argparse exits on --help (0) and on usage errors (2).
    return int(e.code or 0)

  def error(subject: Any, reason: str) -> None:
    _tqdm_write(f"{PROG}: error: {subject}: {reason}")

  if args.batch_size < 0:
    error("--batch-size", "must be ≥ 1")
    return 2
  if args.channel is not None and args.channel < 0:
    error("--channel", "must be ≥ 0")
    return 2
  files, failures = find_inputs(args.inputs, args.recursive)
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
      model = load_model(args.weights, args.model, args.batch_size)
    except UsageError as e:
      _tqdm_write(f"{PROG}: error: {e}")
      return 2
    return _run(args, files, model, error, num_failed=len(failures))
  finally:
    absl_logger.setLevel(level)


def _run(args: argparse.Namespace, files: list[pathlib.Path], model: Model,
         error: Callable[[Any, str], None], num_failed: int) -> int:
  """Segments every file; returns the exit status (`num_failed` inputs already failed)."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  inputs = {p.resolve() for p in files}
  planned: dict[pathlib.Path, pathlib.Path] = {}
  done = 0
  with tqdm(files, desc="files", unit="file", disable=args.quiet, file=sys.stderr,
            dynamic_ncols=True) as bar:
    for path in bar:
      bar.set_postfix_str(path.name, refresh=False)
      outputs = output_paths(path, args.output_dir, args.mode, args.save_semantic,
                             args.save_overlay)
      region_bar = None

      def progress(count: int, total: int) -> None:
        nonlocal region_bar
        if region_bar is None:
          unit = "region" if args.model == "spiralnet" else "tile"
          region_bar = tqdm(total=total, desc=f"  {unit}s", unit=unit, leave=False,
                            disable=args.quiet, file=sys.stderr, dynamic_ncols=True)
        region_bar.update(count - region_bar.n)

      try:
        _check_outputs(outputs, inputs, planned, path, args.overwrite)
        segment_file(path, model, outputs, args.channel, args.channel_axis, progress)
        done += 1
      except InputError as e:
        error(path, str(e))
        num_failed += 1
      except MemoryError:
        error(path, "out of memory (try a smaller --batch-size)")
        num_failed += 1
      finally:
        if region_bar is not None:
          region_bar.close()
  if not args.quiet:
    _tqdm_write(f"{PROG}: {done} segmented, {num_failed} failed")
  return 1 if num_failed else 0


def _tqdm_write(line: str) -> None:
  """A line on stderr that does not tear an active progress bar."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  tqdm.write(line, file=sys.stderr)


if __name__ == "__main__":
  sys.exit(main())
