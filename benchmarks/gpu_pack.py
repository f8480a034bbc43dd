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


def repack(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.suffix.lower() in {".jpg", ".jpeg"}:
        import mozjpeg_lossless_optimization

        target.write_bytes(mozjpeg_lossless_optimization.optimize(source.read_bytes()))
    else:
        shutil.copyfile(source, target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coco", action="append", required=True, help="NAME=path/to/coco.json")
    parser.add_argument("--out", type=Path, default=Path(".gpu"))
    parser.add_argument("--remote", default="/root/gpu", help="where the pieces are unpacked on the device")
    parser.add_argument("--piece-mib", type=float, default=58.0)
    args = parser.parse_args()

    piece_bytes = int(args.piece_mib * 2**20)
    (args.out / "w").mkdir(parents=True, exist_ok=True)
    pieces = "abcdefghij"
    piece, used = 0, 0
    seen: dict[str, str] = {}
    for spec in args.coco:
        name, path = spec.split("=", 1)
        coco = json.loads(Path(path).expanduser().read_text())
        for image in coco["images"]:
            source = Path(image["file_name"])
            relative = f"{source.parent.name}/{source.name}"
            if relative not in seen:
                target = args.out / pieces[piece] / "data" / relative
                repack(source, target)
                size = target.stat().st_size
                if used + size > piece_bytes:
                    piece, used = piece + 1, 0
                    moved = args.out / pieces[piece] / "data" / relative
                    moved.parent.mkdir(parents=True, exist_ok=True)
                    target.rename(moved)
                used += size
                seen[relative] = f"{args.remote}/data/{relative}"
            image["file_name"] = seen[relative]
        with gzip.open(args.out / "w" / f"{name}.json.gz", "wt") as handle:
            json.dump(coco, handle)
    for letter in pieces[: piece + 1]:
        total = sum(f.stat().st_size for f in (args.out / letter).rglob("*") if f.is_file())
        print(f"{args.out / letter}: {total / 2**20:.1f} MiB")
    print(f"{len(seen)} images in {piece + 1} pieces")


if __name__ == "__main__":
    main()
