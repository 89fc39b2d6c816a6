#!/usr/bin/env bash
# The quarter-width model, both stages, resumable: rerun the same command after an
# interruption and each train.py continues from its workdir's newest checkpoint.
#   tools/recipe/quarter.sh [ROOT]   (default workdir/quarter; BBBC039 at $SPIRALNET_BBBC039_DIR)
# Writes ROOT/base (configs/bbbc039_cpu_quarter.py), ROOT/base/export, ROOT/finetune
# (configs/bbbc039_cpu_quarter.py:finetune) and ROOT/finetune/export, with train logs beside.
set -euo pipefail
root=${1:-workdir/quarter}
export XLA_FLAGS=--xla_force_host_platform_device_count=2
mkdir -p "$root"
/usr/bin/time -f "base wall %e s" python train.py --config=configs/bbbc039_cpu_quarter.py \
  --workdir="$root/base" 2>&1 | grep -v "orbax\|absl::InitializeLog" >>"$root/base.log"
[ -f "$root/base/export/segmenter.npz" ] || python tools/export_weights.py "$root/base" "$root/base/export"
/usr/bin/time -f "finetune wall %e s" python train.py \
  --config=configs/bbbc039_cpu_quarter.py:finetune --workdir="$root/finetune" \
  --config.train.init_weights="$root/base/export" 2>&1 | grep -v "orbax\|absl::InitializeLog" >>"$root/finetune.log"
[ -f "$root/finetune/export/segmenter.npz" ] || python tools/export_weights.py "$root/finetune" "$root/finetune/export"
echo "quarter done"
