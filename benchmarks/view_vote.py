"""Prototype (session 32): count a cell by a box-by-box vote over orientations instead of the median count.

`--views 5` keeps the orientation whose count is the median: it fixes a cell only where one orientation
got every cluster right. A vote per chromosome can fix each cluster on its own: the boxes found in each
orientation are mapped back (deepace.views), registered on those of the image as it is, and grouped (in
falling score, a box joins the group whose first box it overlaps most at IoU >= `--iou`, at most one box
per orientation); a group's score is its boxes' mean over the orientations (0 where one found nothing), and
the count is the number of groups scoring at least a threshold chosen on training cells.

    python benchmarks/view_vote.py detect --coco ~/deepace-runs/data/taichung/val.json \
        --out ~/deepace-runs/vote32/val.npz
    python benchmarks/view_vote.py vote --train ~/deepace-runs/vote32/train.npz \
        --val ~/deepace-runs/vote32/val.npz
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from deepace.config import with_overrides
from deepace.data.coco import read_coco
from deepace.metrics.detection import box_iou
from deepace.views import ORIENTATIONS, boxes_to_original, median_index, oriented, registered

MIN_SCORE = 0.05


def detect(args: argparse.Namespace) -> None:
    from deepace.inference import Detector

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)

    records = read_coco(args.coco)[: args.n]
    detector = Detector.load(args.weights, num_threads=2, optimise=True)
    detector.config = with_overrides(detector.config, args.overrides)
    out: dict[str, np.ndarray] = {}
    for i, record in enumerate(records):
        raw, stain = detector.read(record.path)
        out[f"{i}/truth"] = np.array(record.count)
        out[f"{i}/threshold"] = np.array(detector.threshold_for(stain))
        for v, (turns, mirrored) in enumerate(ORIENTATIONS[: args.views]):
            found = detector.detect_read(oriented(raw, turns, mirrored), stain, args.magnification)
            keep = found.scores >= MIN_SCORE
            boxes = boxes_to_original(found.boxes[keep], found.gray.shape[:2], turns, mirrored)
            out[f"{i}/{v}/boxes"] = boxes
            out[f"{i}/{v}/scores"] = found.scores[keep]
        if i % 20 == 0:
            print(i, flush=True)
    np.savez_compressed(args.out, n=np.array(len(records)), views=np.array(args.views), **out)


def load(path: str) -> list[dict]:
    z = np.load(path)
    cells = []
    for i in range(int(z["n"])):
        views = [(z[f"{i}/{v}/boxes"], z[f"{i}/{v}/scores"]) for v in range(int(z["views"]))]
        cells.append({"truth": int(z[f"{i}/truth"]), "threshold": float(z[f"{i}/threshold"]), "views": views})
    return cells


def groups(views: list[tuple[np.ndarray, np.ndarray]], threshold: float, iou: float) -> np.ndarray:
    """Per group of boxes across orientations, each orientation's score (0 where it has none)."""
    reference = views[0][0][views[0][1] >= threshold]
    boxes, scores, view = [], [], []
    for v, (b, s) in enumerate(views):
        if v:
            b = registered(b, s >= threshold, reference)
        boxes.append(b)
        scores.append(s)
        view.append(np.full(len(s), v))
    b, s, v = np.concatenate(boxes), np.concatenate(scores), np.concatenate(view)
    order = np.argsort(-s, kind="stable")
    b, s, v = b[order], s[order], v[order]
    if not len(b):
        return np.zeros((0, len(views)))
    overlaps = box_iou(b, b)
    heads: list[int] = []
    table: list[np.ndarray] = []
    for k in range(len(b)):
        best, best_iou = -1, iou
        for g, h in enumerate(heads):
            if table[g][v[k]] == 0 and overlaps[k, h] >= best_iou:
                best, best_iou = g, overlaps[k, h]
        if best < 0:
            heads.append(k)
            table.append(np.zeros(len(views)))
            best = len(heads) - 1
        table[best][v[k]] = s[k]
    return np.array(table)


def report(name: str, counts: np.ndarray, truth: np.ndarray) -> str:
    e = counts - truth
    return (
        f"{name}: exact {100 * np.mean(e == 0):.1f}%  ±1 {100 * np.mean(np.abs(e) <= 1):.1f}%  "
        f"MAE {np.mean(np.abs(e)):.2f}  bias {np.mean(e):+.2f}"
    )


def vote(args: argparse.Namespace) -> None:
    train, val = load(args.train), load(args.val)
    levels = np.round(np.arange(0.15, 0.61, 0.025), 3)
    for n_views in [int(k) for k in args.n_views.split(",")]:
        for iou in [float(k) for k in args.iou.split(",")]:
            fused = {}
            for name, cells in (("train", train), ("val", val)):
                tables = [groups(c["views"][:n_views], c["threshold"], iou) for c in cells]
                truth = np.array([c["truth"] for c in cells])
                mean = [t.mean(1) for t in tables]
                fused[name] = (truth, mean, cells)
            truth_t, mean_t, _ = fused["train"]
            exact = [np.mean(np.array([(m >= t).sum() for m in mean_t]) == truth_t) for t in levels]
            mae = [np.mean(np.abs(np.array([(m >= t).sum() for m in mean_t]) - truth_t)) for t in levels]
            chosen = levels[int(np.argmin(mae))]
            for name in ("train", "val"):
                truth, mean, cells = fused[name]
                counts = np.array([(m >= chosen).sum() for m in mean])
                one = np.array([int((c["views"][0][1] >= c["threshold"]).sum()) for c in cells])
                per_view = np.array(
                    [[int((s >= c["threshold"]).sum()) for _, s in c["views"][:n_views]] for c in cells]
                )
                median = np.array([row[median_index(list(row))] for row in per_view])
                print(
                    f"{n_views} views, IoU {iou}, threshold {chosen} (least MAE on train; best exact there "
                    f"{100 * max(exact):.1f}% at {levels[int(np.argmax(exact))]})"
                )
                print("  ", report(f"{name} one view", one, truth))
                print("  ", report(f"{name} median count", median, truth))
                print("  ", report(f"{name} vote", counts, truth))
                if name == "val":
                    for t in levels[::2]:
                        c2 = np.array([(m >= t).sum() for m in mean])
                        print("     ", report(f"val vote at {t}", c2, truth))


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="command", required=True)
    d = sub.add_parser("detect")
    d.add_argument("--coco", required=True)
    d.add_argument("--out", required=True)
    d.add_argument("--weights")
    d.add_argument("--n", type=int)
    d.add_argument("--views", type=int, default=len(ORIENTATIONS))
    d.add_argument(
        "--magnification", type=float, default=1.0, help="resize before counting (boxes mapped back)"
    )
    d.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="config override, e.g. model.input_scale=0.9",
    )
    v = sub.add_parser("vote")
    v.add_argument("--train", required=True)
    v.add_argument("--val", required=True)
    v.add_argument("--n-views", default="3,5,8")
    v.add_argument("--iou", default="0.5")
    args = ap.parse_args()
    detect(args) if args.command == "detect" else vote(args)


if __name__ == "__main__":
    main()
