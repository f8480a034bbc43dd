"""Are the head stages too narrow for all the training cells? A capacity check (not in the paper).

Fitted to 50 training cells the head stages count them 76% exactly, but head fine-tunes on all 1,800 level
off (BENCHMARKS.md, "Session 36: can the head stages fit 50 training cells?"). This widens every stage's
two fc layers (1024 → `--width`) without changing what the model computes (Net2Net-style: the new fc6
units start random but fc7 reads them with zero weights; the new fc7 units start random but the
predictor reads them with zero weights), then fine-tunes the heads on a feature cache exactly as
`benchmarks/head_finetune.py train` does. Run it at `--width 1024` (no widening) for the control: same
seed, same image order; compare the training losses.

    python benchmarks/widen_heads.py --weights deepace/weights/deepace.pt --cache DIR --width 2048 \
        --iterations 2000 --out OUT
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from deepace.head_finetune import HeadSchedule, train_heads, training_pool
from deepace.inference import network_from_payload, read_model_file


def widened(layer: nn.Linear, inputs: int, outputs: int, new_rows_std: float) -> nn.Linear:
    """`layer` with `inputs` inputs and `outputs` outputs: its weights in the top-left block, the new
    input columns zero (so new units upstream change nothing), the new output rows random (std
    `new_rows_std`; 0 keeps them silent) with zero bias."""
    wide = nn.Linear(inputs, outputs)
    with torch.no_grad():
        wide.weight.zero_()
        wide.bias.zero_()
        rows, cols = layer.weight.shape
        if outputs > rows:
            wide.weight[rows:].normal_(0.0, new_rows_std)
        wide.weight[:rows, :cols] = layer.weight
        wide.bias[:rows] = layer.bias
        wide.weight[:rows, cols:] = 0.0
    return wide


def widen_stage(box_head: nn.Module, box_predictor: nn.Module, width: int, std: float = 0.01) -> None:
    """One stage's TwoMLPHead (with its context map, if any) and FastRCNNPredictor, in place."""
    box_head.fc6 = widened(box_head.fc6, box_head.fc6.in_features, width, std)
    if hasattr(box_head, "fc6_context"):
        box_head.fc6_context = widened(box_head.fc6_context, box_head.fc6_context.in_features, width, 0.0)
    box_head.fc7 = widened(box_head.fc7, width, width, std)
    box_predictor.cls_score = widened(
        box_predictor.cls_score, width, box_predictor.cls_score.out_features, 0.0
    )
    box_predictor.bbox_pred = widened(
        box_predictor.bbox_pred, width, box_predictor.bbox_pred.out_features, 0.0
    )


def widen_heads(model: nn.Module, width: int) -> None:
    heads = model.roi_heads
    widen_stage(heads.box_head, heads.box_predictor, width)
    for stage in getattr(heads, "stages", []):
        widen_stage(stage.box_head, stage.box_predictor, width)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--seed", type=int, default=36)
    args = parser.parse_args()
    torch.set_num_threads(2)
    model, _ = network_from_payload(read_model_file(args.weights), [])
    if args.width != model.roi_heads.box_head.fc7.out_features:
        widen_heads(model, args.width)
    index = json.loads((args.cache / "index.json").read_text())
    schedule = HeadSchedule(iterations=args.iterations, lr=args.lr, seed=args.seed)
    train_heads(model, args.cache, training_pool(index), schedule, args.out, progress=False)
    losses = [json.loads(line)["loss"] for line in (args.out / "log.jsonl").open()]
    late = np.mean(losses[-len(losses) // 4 :])
    print(f"width {args.width}: mean loss over the last quarter of the logged windows {late:.4f}")


if __name__ == "__main__":
    main()
