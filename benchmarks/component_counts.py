"""Prototype (session 32): correct a cell's count cluster by cluster, from the pixels the boxes lie on.

Nearly all count errors are in clusters of touching or overlapping chromosomes. Here the chromosome pixels
of a G-band spread (grey < 225 once its levels are normalised, closed and hole-filled) fall into connected
components; each box (annotated or detected) goes to the component it covers most. Per component a
gradient-boosted classifier reads what the detector says there (boxes at several score levels, the scores
near the threshold) and what the pixels say (area against the cell's one-chromosome components, extent,
solidity, skeleton end and branch points) and predicts the annotated minus the counted boxes (−2 … +2).
A cell's count is corrected where the classifier is surer than a confidence (one of `--confidences`)
that out-of-fold predictions on the training cells choose.

Needs scikit-learn (`pip install scikit-learn`; not a DeepACE dependency). Fitted on the detector's
predictions for the training cells (`deepace predict`) and scored on the validation cells' predictions:
nothing of the validation cells is used to fit or choose anything.

    python benchmarks/component_counts.py --train-coco ~/deepace-runs/data/taichung/train.json \
      --train-pred ~/deepace-runs/comp32/taichung_train.pred.json \
      --val-coco ~/deepace-runs/data/taichung/val.json --val-pred ~/deepace-runs/eval30/taichung.pred.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import regionprops
from skimage.morphology import skeletonize

from deepace.config import ModelConfig
from deepace.data.coco import read_coco
from deepace.data.images import read_as_model
from deepace.data.predictions import read_predictions

CHROMOSOME_GREY = 225
SCORE_LEVELS = (0.05, 0.15, 0.25, 0.325, 0.45, 0.6, 0.8, 0.95)
MAX_DIFFERENCE = 2


def components(gray: np.ndarray) -> np.ndarray:
    mask = ndi.binary_fill_holes(ndi.binary_closing(gray < CHROMOSOME_GREY))
    labels, _ = ndi.label(mask)
    return labels


def assign(labels: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Each box's component (the label it covers most), 0 where it covers none."""
    out = np.zeros(len(boxes), dtype=np.int64)
    h, w = labels.shape
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        crop = labels[max(0, int(y1)) : min(h, int(np.ceil(y2))), max(0, int(x1)) : min(w, int(np.ceil(x2)))]
        crop = crop[crop > 0]
        if crop.size:
            out[i] = np.bincount(crop).argmax()
    return out


def skeleton_points(mask: np.ndarray) -> tuple[int, int, int]:
    skeleton = skeletonize(mask)
    neighbours = ndi.convolve(skeleton.astype(np.int32), np.ones((3, 3), np.int32), mode="constant") - 1
    neighbours = neighbours[skeleton]
    return int(skeleton.sum()), int((neighbours == 1).sum()), int((neighbours >= 3).sum())


def cell_rows(gray: np.ndarray, gt: np.ndarray, boxes: np.ndarray, scores: np.ndarray, threshold: float):
    """(features, annotated count, counted boxes) per component holding any box, and the counted boxes on
    no component."""
    labels = components(gray)
    gt_comp = assign(labels, gt)
    det_comp = assign(labels, boxes)
    counted = scores >= threshold
    props = {p.label: p for p in regionprops(labels)}
    # one chromosome's area in this cell: components holding exactly one confident box
    singles = [
        props[c].area for c in np.unique(det_comp[scores >= 0.8]) if c and (det_comp[counted] == c).sum() == 1
    ]
    unit_area = float(np.median(singles)) if len(singles) >= 3 else float("nan")
    unit_length = float(np.sqrt(unit_area * 6)) if singles else float("nan")
    rows, targets, counts = [], [], []
    # which components are read depends on the detections and the pixels alone, never on the annotations
    min_area = 0.25 * unit_area if np.isfinite(unit_area) else 300.0
    large = [c for c, p in props.items() if p.area >= min_area]
    for c in np.unique(np.concatenate([large, det_comp[scores >= SCORE_LEVELS[0]]]).astype(np.int64)):
        if c == 0:
            continue
        p = props[c]
        on = det_comp == c
        s = scores[on]
        n_counted = int((s >= threshold).sum())
        minr, minc, maxr, maxc = p.bbox
        length, ends, branches = skeleton_points(p.image)
        features = [
            p.area / unit_area,
            p.area,
            unit_area,
            (maxr - minr) / unit_length,
            (maxc - minc) / unit_length,
            p.solidity,
            p.extent,
            p.eccentricity,
            length / unit_length,
            ends,
            branches,
            p.area / unit_area / max(n_counted, 1),
            *[(s >= level).sum() for level in SCORE_LEVELS],
            s.sum(),
            ((s > threshold - 0.2) & (s < threshold + 0.3)).sum(),
            s[s >= threshold].min() if n_counted else 0.0,
            s[s < threshold].max() if (s < threshold).any() else 0.0,
        ]
        rows.append(features)
        targets.append(int((gt_comp == c).sum()))
        counts.append(n_counted)
    free = int((counted & (det_comp == 0)).sum())
    return rows, targets, counts, free


def table(coco: str, pred: str, config: ModelConfig, limit: int | None):
    records = read_coco(coco)[:limit]
    by_image = {Path(p.image).resolve(): p for p in read_predictions(pred)}
    X, y, counted, cell, cells = [], [], [], [], []
    for i, r in enumerate(records):
        p = by_image[Path(r.path).resolve()]
        gray, stain, _ = read_as_model(r.path, "auto", config.brightfield_levels, None)
        threshold = p.score_threshold
        rows, targets, counts, free = cell_rows(gray, r.boxes, p.boxes, p.scores, threshold)
        X += rows
        y += targets
        counted += counts
        cell += [i] * len(rows)
        cells.append((len(r.boxes), int((p.scores >= threshold).sum()), free))
    return np.asarray(X, float), np.asarray(y), np.asarray(counted), np.asarray(cell), cells


def cell_counts(corrections: np.ndarray, cell: np.ndarray, cells: list) -> tuple[np.ndarray, np.ndarray]:
    truth = np.array([c[0] for c in cells])
    base = np.array([c[1] for c in cells])
    return truth, base + np.bincount(cell, weights=corrections, minlength=len(cells)).astype(int)


def summary(name: str, truth: np.ndarray, counts: np.ndarray) -> str:
    err = counts - truth
    return (
        f"{name}: exact {100 * np.mean(err == 0):.1f}%  ±1 {100 * np.mean(np.abs(err) <= 1):.1f}%  "
        f"MAE {np.mean(np.abs(err)):.2f}  bias {np.mean(err):+.2f}"
    )


def corrections(model, X: np.ndarray, confidence: float) -> np.ndarray:
    proba = model.predict_proba(X)
    best = proba.argmax(1)
    diff = model.classes_[best]
    return np.where(proba[np.arange(len(X)), best] >= confidence, diff, 0)


def main() -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import GroupKFold

    ap = argparse.ArgumentParser()
    ap.add_argument("--train-coco", required=True)
    ap.add_argument("--train-pred", required=True)
    ap.add_argument("--val-coco", required=True)
    ap.add_argument("--val-pred", required=True)
    ap.add_argument("--limit", type=int)
    ap.add_argument("--cache", help="npz of the feature tables (written, or read when it exists)")
    ap.add_argument("--confidences", default="0.5,0.6,0.7,0.8,0.9")
    args = ap.parse_args()
    config = ModelConfig()
    if args.cache and Path(args.cache).exists():
        z = np.load(args.cache, allow_pickle=True)
        train, val = tuple(z["train"]), tuple(z["val"])
    else:
        train = table(args.train_coco, args.train_pred, config, args.limit)
        val = table(args.val_coco, args.val_pred, config, None)
        if args.cache:
            np.savez(args.cache, train=np.array(train, dtype=object), val=np.array(val, dtype=object))
    Xt, yt, ct, cell_t, cells_t = train
    Xv, yv, cv, cell_v, cells_v = val
    dt = np.clip(yt - ct, -MAX_DIFFERENCE, MAX_DIFFERENCE)
    print(
        f"train components {len(Xt)} (cells {len(cells_t)}), differences",
        dict(zip(*np.unique(dt, return_counts=True), strict=True)),
    )

    def fit(X, d):
        return HistGradientBoostingClassifier(
            max_iter=300, learning_rate=0.05, max_leaf_nodes=31, random_state=0
        ).fit(X, d)

    levels = [float(c) for c in args.confidences.split(",")]
    # out-of-fold corrections on the training cells choose the confidence
    oof = np.zeros((len(levels), len(Xt)))
    for fold_train, fold_test in GroupKFold(5).split(Xt, dt, cell_t):
        model = fit(Xt[fold_train], dt[fold_train])
        for k, level in enumerate(levels):
            oof[k, fold_test] = corrections(model, Xt[fold_test], level)
    truth_t, base_t = cell_counts(np.zeros(len(Xt)), cell_t, cells_t)
    print(summary("train, as counted", truth_t, base_t))
    best = 0
    for k, level in enumerate(levels):
        truth, counts = cell_counts(oof[k], cell_t, cells_t)
        print(
            summary(f"train out-of-fold, confidence {level}", truth, counts),
            f" changed {int((oof[k] != 0).sum())}",
        )
        if np.mean(counts == truth) > np.mean(cell_counts(oof[best], cell_t, cells_t)[1] == truth):
            best = k
    model = fit(Xt, dt)
    truth_v, base_v = cell_counts(np.zeros(len(Xv)), cell_v, cells_v)
    print(summary("val, as counted", truth_v, base_v))
    for k, level in enumerate(levels):
        fixes = corrections(model, Xv, level)
        truth, counts = cell_counts(fixes, cell_v, cells_v)
        mark = " <- chosen on training cells" if k == best else ""
        print(summary(f"val, confidence {level}", truth, counts), f" changed {int((fixes != 0).sum())}{mark}")
    print(json.dumps({"chosen_confidence": levels[best]}))


if __name__ == "__main__":
    main()
