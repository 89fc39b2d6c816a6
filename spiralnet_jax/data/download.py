"""Fetches BBBC039 (images.zip, masks.zip, metadata.zip), unpacks it and verifies every file.

    python -m spiralnet_jax.data.download DEST [--base-url URL] [--sums FILE] [--no-verify]
    python -m spiralnet_jax.data.download DEST --verify-only   # check an existing copy

DEST ends up as DEST/images/*.tif, DEST/masks/*.png, DEST/metadata/*.txt: the layout that
`config.data.data_dir` / $SPIRALNET_BBBC039_DIR expect. The sha256 of every file (200 images,
200 masks, 5 metadata files) is shipped with the package in `sample/BBBC039_SHA256SUMS`.
Files an archive holds beyond that list (e.g. the CellProfiler pipeline in metadata.zip) are
unpacked but not checked.
"""

import argparse
import hashlib
import os
import pathlib
import shutil
import sys
from typing import Mapping, Optional, Sequence, Union
import urllib.error
import urllib.parse
import urllib.request
import zipfile

from spiralnet_jax.data import bbbc039

PathLike = Union[str, os.PathLike]

DEFAULT_BASE_URL = "https://data.broadinstitute.org/bbbc/BBBC039/"
PARTS = ("images", "masks", "metadata")  # <part>.zip unpacks into DEST/<part>/.


def checksums_path() -> pathlib.Path:
  """The bundled sha256 list of the full data set (`<hex>  <part>/<file>` per line)."""
  return bbbc039.sample_dir() / "BBBC039_SHA256SUMS"


def read_checksums(path: Optional[PathLike] = None) -> dict[str, str]:
  """Parses a `sha256sum`-format file into {relative path: hex digest} (bundled list if None)."""
  path = pathlib.Path(path) if path is not None else checksums_path()
  checksums = {}
  for lineno, line in enumerate(path.read_text().splitlines(), start=1):
    if not line.strip():
      continue
    digest, sep, name = line.partition("  ")
    if not sep or len(digest) != 64:
      raise ValueError(f"{path}:{lineno}: not a `<sha256>  <path>` line: {line!r}")
    checksums[name.lstrip("*")] = digest.lower()
  return checksums


def sha256(path: PathLike) -> str:
  """The hex sha256 of a file, read in chunks."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def verify(data_dir: PathLike, checksums: Optional[Mapping[str, str]] = None) -> list[str]:
  """Checks every listed file under data_dir; returns one line per problem ([] = all good)."""
  checksums = read_checksums() if checksums is None else checksums
  data_dir = pathlib.Path(data_dir)
  problems = []
  for name, expected in sorted(checksums.items()):
    path = data_dir / name
    if not path.is_file():
      problems.append(f"missing   {name}")
      continue
    actual = sha256(path)
    if actual != expected.lower():
      problems.append(f"mismatch  {name}: expected sha256 {expected}, got {actual}")
  return problems


class ChecksumError(ValueError):
  """Files that are missing or whose sha256 differs from the shipped list."""

  def __init__(self, data_dir: PathLike, problems: Sequence[str]):
    self.problems = list(problems)
    shown = "\n  ".join(self.problems[:20])
    more = f"\n  ... and {len(self.problems) - 20} more" if len(self.problems) > 20 else ""
    super().__init__(
        f"BBBC039 in {str(data_dir)!r} failed verification ({len(self.problems)} of the "
        f"listed files):\n  {shown}{more}\nThe download may be truncated or the upstream files "
        f"may have changed. Download again, or compare with {bbbc039.HOMEPAGE}; "
        "`--no-verify` (verify=False) keeps the files unchecked.")


def _extract(archive: pathlib.Path, out_dir: pathlib.Path) -> list[str]:
  """Unpacks the files of a zip flat into out_dir (whatever folder the zip puts them in)."""
  out_dir.mkdir(parents=True, exist_ok=True)
  written = {}
  with zipfile.ZipFile(archive) as zf:
    for info in zf.infolist():
      parts = pathlib.PurePosixPath(info.filename.replace("\\", "/")).parts
      # Skip folders and macOS resource forks; keep only the base name, which also makes
      # path traversal ("../x") impossible.
      if info.is_dir() or not parts or parts[-1].startswith(".") or "__MACOSX" in parts:
        continue
      name = parts[-1]
      if name in written:
        raise ValueError(f"{archive.name}: {info.filename!r} and {written[name]!r} would both "
                         f"unpack to {name!r}")
      written[name] = info.filename
      with zf.open(info) as src, open(out_dir / name, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
  return sorted(written)


def _fetch(url: str, target: pathlib.Path) -> None:
  try:
    with urllib.request.urlopen(url, timeout=120) as response, open(target, "wb") as f:
      shutil.copyfileobj(response, f, 1 << 20)
  except (urllib.error.URLError, OSError) as e:
    raise RuntimeError(f"could not download {url}: {e}. Download the archives by hand from "
                       f"{bbbc039.HOMEPAGE} and unpack them into images/, masks/, "
                       "metadata/") from e


def download(dest_dir: PathLike, base_url: str = DEFAULT_BASE_URL,
             checksums: Optional[Mapping[str, str]] = None,
             verify_files: bool = True) -> pathlib.Path:
  """Downloads and unpacks the three BBBC039 zips into dest_dir, then verifies every file."""
  dest = pathlib.Path(dest_dir).expanduser()
  dest.mkdir(parents=True, exist_ok=True)
  base_url = base_url if base_url.endswith("/") else base_url + "/"
  for part in PARTS:
    url = urllib.parse.urljoin(base_url, f"{part}.zip")
    archive = dest / f".{part}.zip.part"
    print(f"downloading {url}", file=sys.stderr)
    _fetch(url, archive)
    try:
      names = _extract(archive, dest / part)
    finally:
      archive.unlink()
    print(f"  {len(names)} files -> {dest / part}", file=sys.stderr)
  if verify_files:
    problems = verify(dest, checksums)
    if problems:
      raise ChecksumError(dest, problems)
  return dest


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Command line: download (or only verify) BBBC039 into DEST."""
  parser = argparse.ArgumentParser(
      prog="python -m spiralnet_jax.data.download",
      description=f"Download BBBC039 ({bbbc039.HOMEPAGE}) and verify it.")
  parser.add_argument("dest", help="directory to fill with images/, masks/, metadata/")
  parser.add_argument("--base-url", default=DEFAULT_BASE_URL,
                      help="where images.zip, masks.zip and metadata.zip are")
  parser.add_argument("--sums", default=None,
                      help="sha256sum-format list to verify against (default: the bundled one)")
  parser.add_argument("--no-verify", action="store_true", help="skip the sha256 check")
  parser.add_argument("--verify-only", action="store_true",
                      help="do not download; only verify the files already in DEST")
  args = parser.parse_args(argv)
  checksums = read_checksums(args.sums) if args.sums else None
  try:
    if args.verify_only:
      problems = verify(args.dest, checksums)
      if problems:
        raise ChecksumError(args.dest, problems)
    else:
      download(args.dest, args.base_url, checksums, verify_files=not args.no_verify)
  except (ChecksumError, RuntimeError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"BBBC039 ready in {args.dest}; set {bbbc039.ENV_VAR}={args.dest} or "
        f"config.data.data_dir to use it.")
  return 0


if __name__ == "__main__":
  sys.exit(main())
