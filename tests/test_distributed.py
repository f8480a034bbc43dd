"""Distributed training through torchrun + DistributedDataParallel (gloo, 2 CPU processes)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from deepace.data.coco import write_coco
from tests.helpers_detection import tiny_config, write_blob_records


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not on PATH")
def test_torchrun_two_cpu_processes(tmp_path: Path) -> None:
    records = write_blob_records(tmp_path / "imgs", 4, size=128)
    write_coco(records, tmp_path / "train.json")
    config = tiny_config(iterations=4)
    config.train.checkpoint_every = 2
    # two images per process, one at a time: the gradients are averaged across processes once, at the
    # second image's backward (DistributedDataParallel.no_sync for the first)
    config.train.batch_size = 2
    config.train.micro_batches = 2
    config.save(tmp_path / "config.json")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        "torchrun",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "deepace",
        "train",
        "--config",
        str(tmp_path / "config.json"),
        "--train",
        str(tmp_path / "train.json"),
        "--out",
        str(tmp_path / "run"),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    state = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=False)
    assert state["iteration"] == 4
    assert (tmp_path / "run" / "best.pt").exists()
