"""What the backbone costs at inference: the shipped model's feature extractor (MobileNetV2 + pyramid)
against the same extractor on the paper's VGG16 (and ResNet-18), on the same Taichung spreads in one run,
all through `deepace count`'s inference optimisations (folded batch norms, channels-last).

    python benchmarks/backbone_speed.py --coco ~/deepace-runs/data/taichung/val.json --n 20

The RPN, the heads and the rescorer read the pyramid's 128-channel maps whatever the backbone, so they
cost the same with any backbone given the same proposals; the shipped model's whole-spread time is
measured too, and "estimated s per spread" is it with the shipped extractor's time swapped for the other's.
Only the timing of the other backbones means anything here: their weights are untrained (a trained VGG16
model at this recipe is in BENCHMARKS.md, "VGG16 … at a mid CPU budget").
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch
from speed import median_seconds  # benchmarks/ is on the path when a script in it runs

from deepace.data.coco import read_coco
from deepace.inference import Detector
from deepace.models.detector import build_detector
from deepace.models.fuse import optimise_for_inference
from deepace.models.transform import gray_to_tensor


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--coco", type=Path, required=True)
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--backbones", nargs="+", default=["vgg16", "resnet18"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    detector = Detector.load(args.weights, optimise=True)
    grays = [detector.prepare(r.path) for r in read_coco(args.coco)[: args.n]]
    # Network input as the shipped model resizes it (Taichung spreads are brightfield: no stain resize)
    inputs = [detector.model.transform([gray_to_tensor(g)])[0].tensors for g in grays]

    def features_of(model: torch.nn.Module):  # noqa: ANN202
        def run(x: torch.Tensor) -> None:
            with torch.inference_mode():
                model.backbone(x.contiguous(memory_format=torch.channels_last))

        return run

    def timed(fn, items) -> float:  # noqa: ANN001
        fn(items[0])  # warm-up
        return median_seconds(fn, items)

    whole = timed(lambda g: detector.predict_gray(g), grays)
    shipped_features = timed(features_of(detector.model), inputs)
    print(f"{len(grays)} Taichung spreads, {args.threads} threads; medians in seconds per spread")
    print("| backbone (+ pyramid) | feature extraction | estimated s per spread |")
    print("|---|---|---|")
    name = detector.config.model.backbone
    print(f"| {name} (shipped, measured whole: {whole:.3f}) | {shipped_features:.3f} | {whole:.3f} |")
    for backbone in args.backbones:
        model = build_detector(replace(detector.config.model, backbone=backbone), load_backbone_weights=False)
        optimise_for_inference(model.eval())
        seconds = timed(features_of(model), inputs)
        print(f"| {backbone} | {seconds:.3f} | {whole - shipped_features + seconds:.3f} |", flush=True)


if __name__ == "__main__":
    main()
