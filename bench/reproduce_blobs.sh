#!/usr/bin/env bash
# The blob reproduction and its ablation (docs/artefacts.md), on 2 CPU cores in about 2 hours:
#   bash bench/reproduce_blobs.sh COCO_IMAGES OUT
# COCO_IMAGES: a folder of the 124 coco128 train2017 images less the four preview photos of data/preview.
# 1. The control: the GPU recipe of checkpoints/README.md at 128 px (full width, TV 6e8, batch 4, the_scream),
#    with the blob fix off (optimizer.bound_gradient_floor=0, the default before the fix), from scratch to
#    step 1500, validating and keeping a checkpoint every 250 steps (about 36 min, 2 threads). It painted white
#    blobs on every held-out photo at step 1250 (torch 2.14.1, seed 0).
# 2. The arms: the control's command with one change each, from scratch to step 1250 (the same seed, data
#    order and steps; a run resumed mid-epoch draws other batches, so arms cannot fork from a checkpoint), two
#    at a time with one thread each (about 40 min a pair).
# 3. The table and grid of bench/artefacts.py over the control's step 1250 and every arm's step 1250.
set -euo pipefail
images=$(realpath "$1"); out=$(realpath -m "$2"); repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
mkdir -p "$out"
recipe=(experiment=demo transformer=johnson data.kind=folder "data.root=$images" data.image_size=128
        data.batch_size=4 data.num_workers=1 loss.content_weight=1e3 loss.style_weight=2e3 loss.tv_weight=6e8
        trainer.val_check_interval=250 checkpoint_every_n_steps=250 checkpoint_keep_all=true
        optimizer.bound_gradient_floor=0 style=data/styles/the_scream.jpg)
python train.py "${recipe[@]}" trainer.max_steps=1500 "run_dir=$out/control" "hydra.run.dir=$out/control"
declare -A arms=([clip]="optimizer.adaptive_clip=2" [floor]="optimizer.bound_gradient_floor=0.05"
                 [augment]="data.scale_jitter=1.5 data.flip=true" [norm]="transformer.norm=demodulated")
running=0
for arm in clip floor augment norm; do
  # shellcheck disable=SC2086  # an arm's settings are separate words; later ones override the recipe's
  OMP_NUM_THREADS=1 python train.py "${recipe[@]}" ${arms[$arm]} trainer.max_steps=1250 \
    "run_dir=$out/$arm" "hydra.run.dir=$out/$arm" > "$out/$arm.log" 2>&1 &
  running=$((running + 1))
  if [ "$running" -eq 2 ]; then wait -n; running=$((running - 1)); fi
done
wait
PYTHONPATH=. python bench/artefacts.py "control=$out/control:step_0001250" "clip=$out/clip:step_0001250" \
  "floor=$out/floor:step_0001250" "augment=$out/augment:step_0001250" "norm=$out/norm:step_0001250" \
  --style data/styles/the_scream.jpg --grid "$out/artefacts.jpg"
