"""benchmarks/gpu_pack.py: training lists and images packed into pieces for a lent GPU's transfers."""

import gzip
import importlib.util
import json
from pathlib import Path

import numpy as np
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_pack.py"
spec = importlib.util.spec_from_file_location("gpu_pack", SCRIPT)
gpu_pack = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_pack)


def _coco(path: Path, images: list[Path]) -> Path:
    coco = {"images": [{"id": i, "file_name": str(p)} for i, p in enumerate(images)], "annotations": []}
    path.write_text(json.dumps(coco))
    return path


def test_images_are_split_into_pieces_under_the_limit_with_the_same_pixels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = []
    for k in range(5):
        folder = tmp_path / "src" / ("jpgs" if k < 3 else "tifs")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / (f"{k}.jpg" if k < 3 else f"{k}.tif")
        Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(path)
        images.append(path)
    first = _coco(tmp_path / "first.json", images[:3])
    second = _coco(tmp_path / "second.json", [images[3], images[4], images[3]])  # one image listed twice
    largest = max(p.stat().st_size for p in images)
    sizes = gpu_pack.pack({"one": first, "two": second}, tmp_path / "out", "/remote", int(2.5 * largest))
    assert len(sizes) >= 2 and all(size <= 2.5 * largest for size in sizes)
    packed = sorted((tmp_path / "out").glob("[a-z]/data/*/*"))
    assert len(packed) == 5  # the twice-listed image travels once
    with gzip.open(tmp_path / "out" / "w" / "two.json.gz", "rt") as handle:
        names = [image["file_name"] for image in json.load(handle)["images"]]
    assert names == ["/remote/data/tifs/3.tif", "/remote/data/tifs/4.tif", "/remote/data/tifs/3.tif"]
    for source in images:
        (copy,) = [p for p in packed if p.name == source.name]
        assert np.array_equal(np.asarray(Image.open(copy)), np.asarray(Image.open(source)))
