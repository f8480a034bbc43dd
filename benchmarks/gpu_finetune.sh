#!/usr/bin/env bash
# Fine-tune a DeepACE model end to end on one GPU for a fixed number of minutes, then export it as float16.
# Session 37 ran it on an H200 lent for 15 minutes (BENCHMARKS.md, "Session 37"), session 38 in two calls.
#
# Expects, under $G (default /root/gpu): deepace.pt (the model to start from), taichung_train.json.gz and
# mfish_train.json.gz (COCO files whose file names point into $G/data), and their images under $G/data.
#   bash benchmarks/gpu_finetune.sh MINUTES RUN_DIR [full|smoke|resume|smoke-resume]
# smoke: train on the M-FISH images present only (a check that the run works on this machine).
# resume: go on from RUN_DIR/last.pt (the same MINUTES: they are the whole run's budget).
# Settings from the environment: DEVICE (cuda), BATCH (8), LR (0.01), WARMUP (300), WORKERS (10), SEED (37),
# STOP_AFTER (stop this call after so many minutes, resumable; for a wall-clock limit per call).
# The model is exported (RUN_DIR/model.pt) once the run has finished.
#
# On a lent machine whose calls carry at most 64 MiB of working tree and run at most 10 minutes each:
#   python benchmarks/gpu_pack.py --coco taichung_train=$D/taichung/train.json --coco mfish_train=$D/mfish/train.json
#   call 1 (carry .gpu/w and a pycocotools wheel; the tracked weights travel in the tree):
#     mkdir -p /root/gpu/site && cp .gpu/w/* /root/gpu/ && cp deepace/weights/deepace.pt /root/gpu/ &&
#     pip install --no-deps --target /root/gpu/site pycocotools-*.whl
#   calls 2, 3 (carry .gpu/a, then .gpu/b; the tracked weights replaced by a placeholder, restored after):
#     cp -r .gpu/a/data /root/gpu/      then      cp -rn .gpu/b/data/* /root/gpu/data/ &&
#     STOP_AFTER=8.5 bash benchmarks/gpu_finetune.sh 11 /root/gpu/run
#   call 4: bash benchmarks/gpu_finetune.sh 11 /root/gpu/run resume, then split -b 15M run/model.pt into $OUT
# The machine is handed back after 30 s idle: the calls must follow one another at once.
set -uo pipefail
G=${G:-/root/gpu}
MINUTES=$1
RUN=$2
MODE=${3:-full}
export PYTHONPATH=$G/site:$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
for f in "$G"/*.json.gz; do gunzip -kf "$f"; done
if [[ "$MODE" == smoke* ]]; then
  python3 - "$G" <<'EOF'
import json, os, sys
g = sys.argv[1]
d = json.load(open(f"{g}/mfish_train.json"))
d["images"] = [im for im in d["images"] if os.path.exists(im["file_name"])]
ids = {im["id"] for im in d["images"]}
d["annotations"] = [a for a in d["annotations"] if a["image_id"] in ids]
json.dump(d, open(f"{g}/smoke.json", "w"))
print(f"smoke: {len(ids)} M-FISH images present")
EOF
  TRAIN=(--train "$G/smoke.json")
else
  M=$G/mfish_train.json  # three times, as in every shipped model's training (MODEL_CARD.md, "Training")
  TRAIN=(--train "$G/taichung_train.json" --train "$M" --train "$M" --train "$M")
fi
EXTRA=()
[[ "$MODE" == *resume ]] && EXTRA+=(--resume)
[ -n "${STOP_AFTER:-}" ] && EXTRA+=(--stop-after-minutes "$STOP_AFTER")
python3 -m deepace train --init "$G/deepace.pt" "${TRAIN[@]}" --out "$RUN" --device "${DEVICE:-cuda}" "${EXTRA[@]}" \
  --set train.batch_size="${BATCH:-8}" --set train.lr="${LR:-0.01}" --set train.iterations=1000000 \
  --set train.max_minutes="$MINUTES" --set train.warmup_iterations="${WARMUP:-300}" \
  --set 'train.lr_steps=[0.65,0.9]' --set train.loader_workers="${WORKERS:-10}" --set train.num_threads=4 \
  --set train.checkpoint_every=500 --set train.log_every=20 --set train.clip_grad_norm=10 \
  --set train.seed="${SEED:-37}" --set 'model.typical_chromosome_width=[14.4,13.4]'
echo "training exit status $?"
if [ -f "$RUN/best.pt" ]; then
  python3 -m deepace export "$RUN/best.pt" --out "$RUN/model.pt" --device cpu
else
  echo "not finished: run again with resume"
fi
