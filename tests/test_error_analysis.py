"""benchmarks/error_analysis.py: where the counted boxes put a missed chromosome, on hand-made boxes."""

import importlib.util
from pathlib import Path

import numpy as np
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "error_analysis.py"
spec = importlib.util.spec_from_file_location("error_analysis", SCRIPT)
error_analysis = importlib.util.module_from_spec(spec)
spec.loader.exec_module(error_analysis)


def kind(missed: int, truth: torch.Tensor, boxes: torch.Tensor, box_found: np.ndarray) -> str:
    return error_analysis.missed_holder_kind(missed, error_analysis.share_inside(truth, boxes), box_found)


# two short chromosomes end to end (0, 1), a long one (2) with a small one lying inside its box (3), and an
# isolated one (4)
TRUTH = torch.tensor(
    [
        [0.0, 0.0, 10.0, 20.0],
        [0.0, 20.0, 10.0, 40.0],
        [50.0, 0.0, 80.0, 60.0],
        [60.0, 20.0, 70.0, 30.0],
        [100.0, 0.0, 110.0, 20.0],
    ]
)


def test_two_chromosomes_in_one_false_box() -> None:
    boxes = torch.tensor([[0.0, 0.0, 10.0, 40.0]])  # one box over both: IoU 0.5 with each, not above it
    two_in_one = "in a false box with another chromosome (two in one box)"
    assert kind(0, TRUTH, boxes, np.array([False])) == two_in_one
    # the same box credited with one of them: the other lies inside a found chromosome's box
    assert kind(1, TRUTH, boxes, np.array([True])) == "inside the box of another chromosome, found"


def test_inside_a_found_chromosomes_box_and_in_no_box() -> None:
    boxes = torch.tensor([[50.0, 0.0, 80.0, 60.0]])  # the long chromosome, found
    assert kind(3, TRUTH, boxes, np.array([True])) == "inside the box of another chromosome, found"
    assert kind(4, TRUTH, boxes, np.array([True])) == "in no counted box"
    assert kind(4, TRUTH, torch.zeros((0, 4)), np.zeros(0, dtype=bool)) == "in no counted box"


def test_a_false_box_around_one_chromosome_alone() -> None:
    boxes = torch.tensor([[95.0, -10.0, 125.0, 40.0]])  # too large: IoU 0.13 with chromosome 4, holds it
    assert kind(4, TRUTH, boxes, np.array([False])) == "in a false box alone"
    # a holder that holds under 60% of the neighbour does not make it two in one box
    boxes = torch.tensor([[0.0, 0.0, 10.0, 31.0]])
    assert kind(0, TRUTH, boxes, np.array([False])) == "in a false box alone"
