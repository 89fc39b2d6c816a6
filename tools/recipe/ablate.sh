#!/usr/bin/env bash
# One short ablation run of configs/bbbc039_cpu.py: the segmenter for a fixed budget of
# regions on top of a shared scorer, then tools/recipe/quick_val.py on validation fields.
#   tools/recipe/ablate.sh NAME SCORER_WORKDIR [--config.field=value ...]
# Budget: ABL_REGIONS regions per epoch (default 4000) x ABL_EPOCHS (default 2); ABL_VAL fields.
set -euo pipefail
name=$1; scorer=$2; shift 2
root=${ABL_ROOT:-workdir/abl}
wd=$root/$name
mkdir -p "$wd/checkpoints"
printf '%s\n' "$@" > "$wd/cmd.txt"  # The overrides, for ablation_table.py.
[ -d "$wd/checkpoints/scorer" ] || cp -r "$scorer/checkpoints/scorer" "$wd/checkpoints/"
{
  /usr/bin/time -f "train wall %e s" python train.py --config=configs/bbbc039_cpu.py --workdir="$wd" \
    --config.stages='("segmenter",)' --config.segmenter.max_train_regions="${ABL_REGIONS:-4000}" \
    --config.segmenter.epochs="${ABL_EPOCHS:-2}" --config.train.max_eval_regions=1000 "$@"
  python tools/recipe/quick_val.py "$wd" --num_images="${ABL_VAL:-10}" --out="$wd/quick_val.json"
} >"$wd/log.txt" 2>&1
echo "$name done"
