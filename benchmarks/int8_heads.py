"""`deepace predict` with the box heads' fully connected layers quantised to int8 (dynamic quantisation,
torch's fbgemm kernels), to see what int8 heads would cost in counts before making them a speed-up.

    python benchmarks/int8_heads.py predict --coco ~/deepace-runs/data/taichung/val.json --out P.json
    deepace evaluate --gt ~/deepace-runs/data/taichung/val.json --pred P.json

Any `deepace` command runs with the heads quantised; DEEPACE_INT8_PER_CHANNEL=1 quantises the weights per
output channel instead of per tensor. `torch.ao.quantization` is deprecated (torchao replaces it), which is
one more reason this stays a measurement, not a feature.
"""

from __future__ import annotations

import os
import warnings

import torch
from torch import nn

import deepace.models.fuse as fuse
from deepace.cli import main

plain_optimisation = fuse.optimise_for_inference


def with_int8_heads(model: nn.Module, runtime: str = "torch") -> nn.Module:
    model = plain_optimisation(model, runtime)
    per_channel = os.environ.get("DEEPACE_INT8_PER_CHANNEL") == "1"
    spec = {nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig} if per_channel else {nn.Linear}
    for heads in [model.roi_heads, *getattr(model.roi_heads, "stages", ())]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the deprecation notice
            heads.box_head = torch.ao.quantization.quantize_dynamic(heads.box_head, spec, dtype=torch.qint8)
    return model


fuse.optimise_for_inference = with_int8_heads

if __name__ == "__main__":
    main()
