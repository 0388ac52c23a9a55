#!/usr/bin/env bash
# The blob reproduction and its ablation (docs/artefacts.md), on 2 CPU cores in about 75 minutes:
#   bash bench/reproduce_blobs.sh COCO_IMAGES OUT
# COCO_IMAGES: a folder of the 124 coco128 train2017 images less the four preview photos of data/preview.
# 1. The control: the GPU recipe of checkpoints/README.md at 128 px (full width, TV 6e8, batch 4, the_scream),
#    from scratch to step 1500, validating and keeping a checkpoint every 250 steps (about 35 min, 2 threads).
#    It painted white blobs on every held-out photo at step 1250 (torch 2.14.1, seed 0).
# 2. The arms: each resumes the control's step-1000 checkpoint (the last before the blobs) with one change,
#    to step 1500, all at once with one thread each (about 35 min). "resumed" changes nothing.
# 3. The table and grid of bench/artefacts.py over the control's step 1250 and every arm's last checkpoint.
set -euo pipefail
images=$(realpath "$1"); out=$(realpath -m "$2"); repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
recipe=(experiment=demo transformer=johnson data.kind=folder "data.root=$images" data.image_size=128
        data.batch_size=4 data.num_workers=1 loss.content_weight=1e3 loss.style_weight=2e3 loss.tv_weight=6e8
        trainer.val_check_interval=250 checkpoint_every_n_steps=250 checkpoint_keep_all=true
        style=data/styles/the_scream.jpg)
python train.py "${recipe[@]}" trainer.max_steps=1500 "run_dir=$out/control" "hydra.run.dir=$out/control"
declare -A arms=([resumed]="" [clip]="optimizer.adaptive_clip=2" [floor]="optimizer.bound_gradient_floor=0.05"
                 [augment]="data.scale_jitter=1.5 data.flip=true")
for arm in "${!arms[@]}"; do
  # shellcheck disable=SC2086  # an arm's settings are separate words
  OMP_NUM_THREADS=1 python train.py "${recipe[@]}" ${arms[$arm]} trainer.max_steps=1500 \
    "ckpt_path=$out/control/checkpoints/step_0001000.ckpt" "run_dir=$out/$arm" "hydra.run.dir=$out/$arm" \
    > "$out/$arm.log" 2>&1 &
done
wait
PYTHONPATH=. python bench/artefacts.py "control=$out/control:step_0001250" "resumed=$out/resumed" \
  "clip=$out/clip" "floor=$out/floor" "augment=$out/augment" --style data/styles/the_scream.jpg \
  --grid "$out/artefacts.jpg"
