#!/usr/bin/env bash
# One head-only experiment against the shipped recipe, end to end: the shipped model's training recipe
# (session 19: the session-13 network's head stages fine-tuned alone on cached features, 10,000 iterations,
# TNRL at alpha 5 on every stage, seed 18, M-FISH cells three times per epoch) plus the given overrides; then
# the rescorer refitted on its candidates, both validation splits, per-case simulation, error kinds, box
# drift and five rescorer fits (their ranges in fit_ranges.md). Compare with BENCHMARKS.md "Session 19".
# Resumable: rerun the same command.
#
#   bash benchmarks/head_variant.sh NAME [--set model.KEY=VALUE]...
#   e.g. bash benchmarks/head_variant.sh a10 --set model.repulsion_weight=10.0
#
# Environment: DATA (the splits, MODEL_CARD.md "Training"; default ~/deepace-runs/data), RUNS (default
# ~/deepace-runs), CACHE (the feature cache, default $RUNS/s18/feature_cache: about 12 GB, 21 minutes on
# 2 cores, shared by every variant), ITERATIONS (default 10000), TRAIN_SEED (default 18, the shipped run's;
# the heads start from the base model's weights, so it sets the data order and RoI sampling), SEEDS
# (rescorer fits, default 5), LR (default 0.001), PART (heads, the default, or rpn: train the RPN head
# instead, then propose again on the cached features for the rescorer's candidates), BASE (the model to
# start from, default the session-13 model; its backbone must be the cache's: a CACHE not built yet is
# built from BASE), HEADS (a model whose
# heads are trained already, e.g. the shipped one: no training, the rest of the chain on it), CACHE_VIEWS
# (views cached per image, default 2: the image and one of its three flips; 4: the image and all three,
# whose first two are the 2-view cache's, so its files can be linked in and only the rest computed). The
# overrides reach every step (e.g. --set model.rescorer_proposal_iou=0.6 changes the candidates). Outputs
# go to $RUNS/variants/NAME/. Caches and runs from before session 30 read brightfield images with their
# grey levels as they are (model.brightfield_levels=null); a cache built since normalises them, so do not
# mix the two in one comparison. A smoke test: small DATA splits, another
# RUNS, ITERATIONS=20 SEEDS=1 CELLS=2 (cells per simulated case, default 20).
set -euo pipefail
NAME=${1:?usage: head_variant.sh NAME [--set model.KEY=VALUE]...}
shift
cd "$(dirname "$0")/.."
DATA=${DATA:-$HOME/deepace-runs/data}
RUNS=${RUNS:-$HOME/deepace-runs}
ITERATIONS=${ITERATIONS:-10000}
SEEDS=${SEEDS:-5}
M=$DATA/mfish/train.json
T=$DATA/taichung/train.json
CACHE=${CACHE:-$RUNS/s18/feature_cache}
S13=$RUNS/s18/shipped_s13.pt
BASE=${BASE:-$S13}
PART=${PART:-heads}
FRESH=()
[ "$PART" = rpn ] && FRESH=(--fresh-proposals)
OUT=$RUNS/variants/$NAME
mkdir -p "$OUT"
log() { echo "== $* ($(date -u +%H:%M:%S))"; }
quiet() { tr '\r' '\n' | grep -v -E "(it|img|view)/s\]$" || true; }

for f in "$T" "$M" "$DATA/taichung/val.json" "$DATA/mfish/val.json"; do
  [ -f "$f" ] || { echo "missing $f: build the splits first (MODEL_CARD.md, \"Training\")" >&2; exit 1; }
done
if [ ! -f "$S13" ]; then  # the session-13 model whose backbone the cache holds
  mkdir -p "$(dirname "$S13")"
  git show e42abc4:deepace/weights/deepace.pt > "$S13.tmp" && mv "$S13.tmp" "$S13"
fi
if [ ! -f "$CACHE/DONE" ]; then
  log cache
  python -u benchmarks/head_finetune.py cache --weights "$BASE" --train "$T" --train "$M" --views "${CACHE_VIEWS:-2}" \
    --out "$CACHE" 2>&1 | quiet
  touch "$CACHE/DONE"
fi
if [ -n "${HEADS:-}" ] && [ ! -f "$OUT/heads/model.pt" ]; then
  mkdir -p "$OUT/heads" && cp "$HEADS" "$OUT/heads/model.pt"
fi
if [ ! -f "$OUT/heads/model.pt" ]; then
  log train
  python -u benchmarks/head_finetune.py train --weights "$BASE" --cache "$CACHE" --iterations "$ITERATIONS" \
    --part "$PART" --lr "${LR:-0.001}" --warmup 100 --seed "${TRAIN_SEED:-18}" --repeat "$M=3" \
    --set model.repulsion=tnrl \
    --set model.repulsion_weight=5.0 --set model.repulsion_all_stages=true "$@" --resume --out "$OUT/heads" \
    >> "$OUT/train.log"
fi
if [ ! -f "$OUT/candidates.pt" ]; then
  log candidates
  python -u benchmarks/head_finetune.py candidates --weights "$OUT/heads/model.pt" --cache "$CACHE" \
    "${FRESH[@]}" "$@" --out "$OUT/candidates.tmp.pt" 2>&1 | quiet | tail -2
  mv "$OUT/candidates.tmp.pt" "$OUT/candidates.pt"
fi
if [ ! -f "$OUT/rescored.pt" ]; then
  log rescorer
  deepace train-rescorer "$OUT/heads/model.pt" --train "$T" --train "$M" --set model.rpn_post_nms_top_n_test=400 "$@" \
    --cache "$OUT/candidates.pt" --calibrate-on "$DATA/taichung/val.json" --calibrate-on "$DATA/mfish/val.json" \
    --out "$OUT/rescored.pt" 2>&1 | quiet > "$OUT/rescorer.log"
  tail -4 "$OUT/rescorer.log"
fi
if [ ! -s "$OUT/eval/mfish.json" ]; then  # evaluate_splits.sh writes it last
  log evaluate
  DATA=$DATA bash benchmarks/evaluate_splits.sh "$OUT/rescored.pt" "$OUT/eval" 2>&1 | quiet
fi
G=$DATA/taichung/val.json
P=$OUT/eval/taichung.pred.json
log case level
for s in 0 1 -1; do
  echo "== shift $s"
  python benchmarks/case_level.py --gt "$G" --pred "$P" --shift "$s" --cells "${CELLS:-20}"
done > "$OUT/case_level.txt"
python benchmarks/error_analysis.py --gt "$G" --pred "$P" > "$OUT/error_analysis.txt"
log candidate recall
python benchmarks/candidate_recall.py --coco "$G" --weights "$OUT/rescored.pt" 2>&1 | quiet \
  > "$OUT/candidate_recall.txt"
log box drift
python benchmarks/box_drift.py --coco "$G" --weights "$OUT/heads/model.pt" 2>&1 | quiet > "$OUT/box_drift.txt"
log rescorer fits
python -u benchmarks/rescorer_variants.py --weights "$OUT/rescored.pt" --train-cache "$OUT/candidates.pt" \
  --val "$G" --val "$DATA/mfish/val.json" --set model.rpn_post_nms_top_n_test=400 "$@" --seeds "$SEEDS" 2>&1 \
  | quiet > "$OUT/rescorer_fits.txt"
python benchmarks/fit_ranges.py "$OUT" > "$OUT/fit_ranges.md"  # as BENCHMARKS.md quotes them
log done
