#!/usr/bin/env bash
# Packs what a GPU chunk carries to the device machine. Run here, in the repo root:
#
#   bash tools/gpu/pack.sh [BBBC039_DIR]      # default: $SPIRALNET_BBBC039_DIR or ../shared/data/bbbc039
#
# .whl/  ml-collections and tensorboardX for the device's Python 3.12 (the only two of our
#        dependencies its image lacks; both pure Python, 170 KB);
# .pack/bbbc039-<split>.tar.xz, one per split, lossless (the fields are 12-bit with shot noise:
#        ~0.3 MB each compressed, so training 30 MB, validation and test 15 MB each).
# A call carries at most 64 MiB with the repo, so a training chunk names training + validation,
# an evaluation validation + test. The folders are git-ignored. See docs/gpu.md.
set -euo pipefail
src=${1:-${SPIRALNET_BBBC039_DIR:-../shared/data/bbbc039}}
if [[ ! -f "$src/metadata/training.txt" ]]; then
  echo "pack.sh: error: no BBBC039 at $src (expected images/, masks/, metadata/)" >&2
  exit 1
fi
mkdir -p .whl .pack
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux2014_x86_64 -d .whl \
  ml_collections==1.1.0 tensorboardX==2.6.5
for split in training validation test; do
  # The split's masks are PNG, its images TIFF, with the same stem.
  sed 's/\.png$//' "$src/metadata/$split.txt" | grep -v '^$' \
    | awk '{print "images/" $0 ".tif"; print "masks/" $0 ".png"}' >"/tmp/pack-$split.txt"
  tar -cf - -C "$src" metadata -T "/tmp/pack-$split.txt" | xz -T0 -6 >".pack/bbbc039-$split.tar.xz"
done
du -sh .whl .pack/bbbc039-*.tar.xz
