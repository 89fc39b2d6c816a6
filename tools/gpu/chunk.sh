#!/usr/bin/env bash
# One resumable chunk of GPU work on the device machine. The device runs, in the repo root:
#
#   bash tools/gpu/chunk.sh NAME SECONDS --config=configs/spiral.py [more train.py flags]
#
# carrying .whl and the .pack files it needs (made by tools/gpu/pack.sh; see docs/gpu.md). It
# installs the wheels, unpacks every .pack/bbbc039-<split>.tar.xz there is, restores
# workdir/NAME from .pack/NAME.tar if an earlier chunk brought one back, and trains for at most
# SECONDS: then SIGTERM makes train.py save the step in flight and stop (chunk.sh then exits 0
# and says so). SECONDS = 0 only evaluates. After a finished training or with SECONDS = 0,
# eval.py evaluates the unpacked splits other than training. $OUT gets NAME.tar (the workdir: checkpoints, config.json,
# metrics.jsonl, eval/) and NAME.log; copy NAME.tar into .pack/ for the next chunk. Leave room
# under the call's 600 s for unpacking (~5 s), data preparation and evaluation.
set -uo pipefail
if [[ $# -lt 2 ]] || { [[ $2 != 0 ]] && [[ $# -lt 3 ]]; }; then
  echo "usage: bash tools/gpu/chunk.sh NAME SECONDS [--config=CONFIG train.py flags]" >&2
  exit 2
fi
name=$1 seconds=$2
shift 2
out=${OUT:?chunk.sh: error: OUT (the folder that comes back) is not set}
log=$out/$name.log
if compgen -G ".whl/*.whl" >/dev/null; then  # The device lacks them; a dev machine has them.
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
export SPIRALNET_BBBC039_DIR=/tmp/bbbc039
mkdir -p "$SPIRALNET_BBBC039_DIR" workdir
splits=()
for pack in .pack/bbbc039-*.tar.xz; do
  [[ -f $pack ]] || continue
  tar -xJf "$pack" -C "$SPIRALNET_BBBC039_DIR" || exit 1
  split=${pack#.pack/bbbc039-}
  split=${split%.tar.xz}
  [[ $split == training ]] || splits+=("$split")
done
if [[ -f .pack/$name.tar ]]; then
  rm -rf "workdir/$name" && tar -xf ".pack/$name.tar" -C workdir || exit 1
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  git rev-parse HEAD
  python3 -c "import jax, flax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())"
} >"$log" 2>&1
status=0
if [[ $seconds != 0 ]]; then
  timeout -s TERM "$seconds" python3 train.py --workdir="workdir/$name" "$@" >>"$log" 2>&1
  status=$?
  echo "train.py exit status: $status" >>"$log"
fi
if [[ $status -eq 0 ]] && [[ ${#splits[@]} -gt 0 ]]; then
  splits_flag=$(IFS=,; echo "${splits[*]}")
  python3 eval.py --workdir="workdir/$name" --splits="$splits_flag" >>"$log" 2>&1
  status=$?
  echo "eval.py exit status: $status" >>"$log"
fi
tar -cf "$out/$name.tar" -C workdir "$name"
if [[ $status -eq 124 ]]; then
  # timeout's own code: our SIGTERM stopped train.py, which saved the step it reached. Not a
  # failure (and 124 would read as the device call's own time limit).
  echo "chunk.sh: training not finished after $seconds s; copy $name.tar into .pack/ and run" \
    "again to resume" >>"$log"
  status=0
fi
tail -n 25 "$log"
exit "$status"
