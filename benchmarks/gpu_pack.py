"""Pack COCO training lists and their images into pieces small enough for a lent GPU machine's transfer.

The device tool copies at most 64 MiB of working tree per call, so the images travel in several folders
(`.gpu/a`, `.gpu/b`, ...), JPEGs losslessly re-packed by mozjpeg (decoded pixels identical), and each COCO
file is rewritten to point at `$G/data/...` and gzipped into `.gpu/w` (BENCHMARKS.md, "Session 37").

    python benchmarks/gpu_pack.py --coco taichung_train=~/deepace-runs/data/taichung/train.json \
        --coco mfish_train=~/deepace-runs/data/mfish/train.json --out .gpu --piece-mib 58
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
from pathlib import Path

try:
    import mozjpeg_lossless_optimization
except ImportError:  # optional: without it the JPEGs travel as they are
    mozjpeg_lossless_optimization = None

PIECES = "abcdefghijklmnopqrstuvwxyz"


def repack(source: Path, target: Path) -> None:
    """Copy one image; a JPEG is re-packed losslessly by mozjpeg if installed (smaller, same pixels)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if mozjpeg_lossless_optimization is not None and source.suffix.lower() in {".jpg", ".jpeg"}:
        target.write_bytes(mozjpeg_lossless_optimization.optimize(source.read_bytes()))
    else:
        shutil.copyfile(source, target)


def pack(cocos: dict[str, Path], out: Path, remote: str, piece_bytes: int) -> list[int]:
    """Images into out/a, out/b, ... (each under piece_bytes unless one image is larger), each COCO file
    rewritten to `remote`/data/... as out/w/NAME.json.gz; an image listed twice travels once. Returns the
    pieces' sizes in bytes."""
    (out / "w").mkdir(parents=True, exist_ok=True)
    sizes = [0]
    seen: dict[str, str] = {}
    for name, path in cocos.items():
        coco = json.loads(Path(path).expanduser().read_text())
        for image in coco["images"]:
            source = Path(image["file_name"])
            relative = f"{source.parent.name}/{source.name}"
            if relative not in seen:
                target = out / PIECES[len(sizes) - 1] / "data" / relative
                repack(source, target)
                size = target.stat().st_size
                if sizes[-1] and sizes[-1] + size > piece_bytes:
                    sizes.append(0)
                    moved = out / PIECES[len(sizes) - 1] / "data" / relative
                    moved.parent.mkdir(parents=True, exist_ok=True)
                    target.rename(moved)
                sizes[-1] += size
                seen[relative] = f"{remote}/data/{relative}"
            image["file_name"] = seen[relative]
        with gzip.open(out / "w" / f"{name}.json.gz", "wt") as handle:
            json.dump(coco, handle)
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coco", action="append", required=True, help="NAME=path/to/coco.json")
    parser.add_argument("--out", type=Path, default=Path(".gpu"))
    parser.add_argument("--remote", default="/root/gpu", help="where the pieces are unpacked on the device")
    parser.add_argument("--piece-mib", type=float, default=58.0)
    args = parser.parse_args()
    cocos = {spec.split("=", 1)[0]: Path(spec.split("=", 1)[1]) for spec in args.coco}
    sizes = pack(cocos, args.out, args.remote, int(args.piece_mib * 2**20))
    for letter, size in zip(PIECES, sizes, strict=False):
        print(f"{args.out / letter}: {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
