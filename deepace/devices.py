"""Which device to train or run on: `auto` takes a CUDA GPU when PyTorch sees one (under torchrun, the one
of this process's LOCAL_RANK), else the CPU. Everything else in DeepACE follows the model's device."""

from __future__ import annotations

import itertools
import os

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """`auto`, `cpu`, `cuda` or `cuda:N` as a torch.device; a CUDA device this machine lacks is an error
    (a run asked to use a GPU should not quietly take hours on the CPU)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r}: PyTorch sees no CUDA GPU here (use 'cpu' or 'auto')")
        if device.index is None:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        if device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} CUDA GPU(s) here")
    elif device.type != "cpu":
        raise ValueError(f"device {name!r}: DeepACE runs on 'cpu' or 'cuda'")
    return device


def model_device(model: object) -> torch.device:
    """The device of `model`'s first parameter or buffer; the CPU for a module with none, or for a callable
    that is no torch module."""
    if isinstance(model, torch.nn.Module):
        # the first tensor only: this runs once per image, and a model has hundreds
        first = next(itertools.chain(model.parameters(), model.buffers()), None)
        if first is not None:
            return first.device
    return torch.device("cpu")
