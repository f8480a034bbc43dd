"""The chance that a cell's count is exact, read from its boxes' scores (not in the paper).

The shipped model's scores are its overlap rescorer's probabilities that a box is a chromosome no
higher-scored box has found (deepace/models/rescorer.py), so the number of chromosomes in a cell, taking
the boxes as independent, is a sum of Bernoulli variables: a Poisson-binomial distribution, computed
exactly by convolution. Its mass at the model's count is the chance that the count is exact. Many boxes
near 0.5 make it small; all boxes near 0 or 1 make it large, however many boxes the cell has.

On G-band cells it tells which cells to check first better than the number of flagged boxes does, on DAPI
cells no better (BENCHMARKS.md, "Session 36: the chance that a count is exact"); it is the model's own
estimate, and `calibration` measures it against cells whose count is known. A model with the paper's
post-processing instead of the rescorer has scores that are not such probabilities, and its chances mean
less.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# the bands of chance `calibration` reports, as fractions
CHANCE_BANDS = ((0.0, 0.2), (0.2, 0.4), (0.4, 0.6), (0.6, 1.0))


def count_distribution(scores: Sequence[float] | np.ndarray) -> np.ndarray:
    """P(N = k) for k = 0 … len(scores), N the number of boxes that are chromosomes, each box one with
    the probability its score gives, independently."""
    distribution = np.ones(1)
    for p in np.clip(np.asarray(scores, dtype=np.float64).reshape(-1), 0.0, 1.0):
        distribution = np.convolve(distribution, [1.0 - p, p])
    return distribution


def exact_chance(scores: Sequence[float] | np.ndarray, count: int) -> float:
    """The probability, under `count_distribution(scores)`, that the cell holds exactly `count`
    chromosomes."""
    distribution = count_distribution(scores)
    return float(distribution[count]) if 0 <= count < len(distribution) else 0.0


def calibration(chances: Sequence[float], exact: Sequence[bool]) -> dict[str, Any]:
    """How the model's chances of an exact count compare with what happened: their mean against the share
    of exact cells (percentages), the area under the ROC curve with which they tell exact cells from the
    others (0.5 = no better than chance; None when all cells are alike), and per band of chance the cells
    in it and the share of them counted exactly."""
    chance = np.asarray(chances, dtype=np.float64)
    right = np.asarray(exact, dtype=bool)
    if len(chance) != len(right):
        raise ValueError(f"{len(chance)} chances for {len(right)} cells")
    bands = []
    for low, high in CHANCE_BANDS:
        inside = (chance >= low) & ((chance < high) if high < 1.0 else (chance <= high))
        n = int(inside.sum())
        bands.append(
            {
                "band": [low * 100, high * 100],
                "cells": n,
                "mean_chance": float(chance[inside].mean() * 100) if n else None,
                "exact": float(right[inside].mean() * 100) if n else None,
            }
        )
    return {
        "n": len(chance),
        "mean_chance": float(chance.mean() * 100) if len(chance) else None,
        "exact": float(right.mean() * 100) if len(chance) else None,
        "auc": ranking_auc(chance, right),
        "bands": bands,
    }


def ranking_auc(values: Sequence[float], exact: Sequence[bool]) -> float | None:
    """P(an exact cell's value > a miscounted cell's), ties counted half (the Mann–Whitney statistic): how
    well `values` (a chance, or any other sign of a right count) rank the exact cells first."""
    chance, right = np.asarray(values, dtype=np.float64), np.asarray(exact, dtype=bool)
    positives, negatives = chance[right], chance[~right]
    if len(positives) == 0 or len(negatives) == 0:
        return None
    above = (positives[:, None] > negatives[None, :]).sum()
    ties = (positives[:, None] == negatives[None, :]).sum()
    return float((above + 0.5 * ties) / (len(positives) * len(negatives)))
