#!/usr/bin/env bash
# Accuracy of a model on the fixed validation splits (G-band and DAPI separately), with the model's own
# counting threshold:  bash benchmarks/evaluate_splits.sh [MODEL_FILE] [OUT_DIR]
# VIEWS=5: each cell counted in 5 orientations, the median one kept (`deepace count --views`).
set -euo pipefail
MODEL=${1:-deepace/weights/deepace.pt}
OUT=${2:-$HOME/deepace-runs/eval}
DATA=${DATA:-$HOME/deepace-runs/data}
mkdir -p "$OUT"
for split in taichung mfish; do
  deepace predict --coco "$DATA/$split/val.json" --weights "$MODEL" --out "$OUT/$split.pred.json" \
    --views "${VIEWS:-1}"
  deepace evaluate --gt "$DATA/$split/val.json" --pred "$OUT/$split.pred.json" | tee "$OUT/$split.txt"
  deepace evaluate --gt "$DATA/$split/val.json" --pred "$OUT/$split.pred.json" --json > "$OUT/$split.json"
done
