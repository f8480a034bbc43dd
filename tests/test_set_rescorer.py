"""Set rescoring (model.rescorer_kind=set): every candidate decided with every candidate it overlaps in view,
lower-scored ones included, which the greedy rescorer cannot see."""

from __future__ import annotations

import torch

from deepace.models.detector import build_detector
from deepace.models.rescorer import Candidates, OverlapRescorer
from deepace.models.set_rescorer import SetRescorer, cell_graph
from deepace.rescoring import LabelledCandidates, fit_rescorer, fit_set_rescorer, join_graphs, match_labels
from tests.helpers_detection import tiny_config

WHOLE = [100.0, 100.0, 140.0, 200.0]  # a chromosome
ARM = [100.0, 100.0, 140.0, 140.0]  # its upper arm: inside it, IoU 0.4 (no claim)
# isolated chromosomes elsewhere, so that the size reference (the median confident box) is the same in
# every cell
OTHERS = [[300.0 + 60 * k, 300.0, 350.0 + 60 * k, 350.0] for k in range(9)]


def cell(kind: str, shift: float, arm_score: float, whole_score: float = 0.8) -> LabelledCandidates:
    """'arm': the arm's box scores above the whole chromosome's box (the arm is no chromosome);
    'small': the same box, alone, is a small chromosome."""
    arm = torch.tensor(ARM) + shift
    boxes = (
        [arm] + ([torch.tensor(WHOLE) + shift] if kind == "arm" else []) + [torch.tensor(o) for o in OTHERS]
    )
    scores = [arm_score] + ([whole_score] if kind == "arm" else []) + [0.7] * len(OTHERS)
    boxes_t, scores_t = torch.stack(boxes), torch.tensor(scores)
    order = scores_t.argsort(descending=True)
    boxes_t, scores_t = boxes_t[order], scores_t[order]
    truth = torch.stack(
        ([torch.tensor(WHOLE) + shift] if kind == "arm" else [arm]) + [torch.tensor(o) for o in OTHERS]
    )
    candidates = Candidates(boxes_t, scores_t[:, None].clone(), scores_t)
    return LabelledCandidates(candidates, match_labels(boxes_t, truth))


def training_cells(n: int = 40) -> list[LabelledCandidates]:
    generator = torch.Generator().manual_seed(0)
    cells = []
    for k in range(n):
        shift, score = (
            float(torch.rand(1, generator=generator)) * 40,
            0.85 + 0.1 * float(torch.rand(1, generator=generator)),
        )
        cells.append(cell("arm" if k % 2 else "small", shift, score))
    return cells


def test_an_arm_scored_above_its_chromosome_is_dropped_only_by_the_set_rescorer() -> None:
    arm_cell, small_cell = cell("arm", 7.0, 0.9), cell("small", 7.0, 0.9)
    assert (
        arm_cell.labels[0].item() is False and small_cell.labels[0].item() is True
    )  # the arm's box is first
    samples = training_cells()

    greedy = OverlapRescorer(num_stages=1)
    fit_rescorer(greedy, samples, epochs=60, batch_size=64, progress=False)
    # The greedy rescorer decides the arm's box first, from the boxes above it (none): it sees the same
    # thing in both cells, so it must give both the same answer, right in one and wrong in the other.
    assert torch.allclose(greedy(arm_cell.candidates)[0], greedy(small_cell.candidates)[0])

    rescorer = SetRescorer(num_stages=1, hidden=32, blocks=2)
    result = fit_set_rescorer(rescorer, samples, epochs=60, lr=1e-2, cells_per_batch=8, progress=False)
    assert result["accuracy"] == 1.0
    on_arm, on_small = rescorer(arm_cell.candidates), rescorer(small_cell.candidates)
    assert on_arm[0] < 0.5 < on_arm[1]  # the arm dropped, the whole chromosome kept
    assert on_small[0] > 0.5


def test_joined_cells_are_scored_as_each_alone() -> None:
    torch.manual_seed(0)
    rescorer = SetRescorer(num_stages=1).eval()
    cells = [cell("arm", 3.0, 0.9), cell("small", 11.0, 0.88), cell("arm", 30.0, 0.93)]
    graphs = [(*cell_graph(c.candidates), c.labels.float()) for c in cells]
    nodes, pairs, edges, labels = join_graphs(graphs)
    with torch.no_grad():
        joined = rescorer.graph_logits(nodes, pairs, edges)
    alone = torch.cat([torch.logit(rescorer(c.candidates)) for c in cells])
    torch.testing.assert_close(joined, alone, rtol=1e-4, atol=1e-4)
    assert torch.equal(labels, torch.cat([c.labels.float() for c in cells]))


def test_pairs_link_overlapping_candidates_both_ways() -> None:
    c = cell("arm", 0.0, 0.9).candidates  # the arm (0) and the whole chromosome (1) overlap; the others not
    _, features, (i, j) = cell_graph(c)
    assert sorted(zip(i.tolist(), j.tolist(), strict=True)) == [(0, 1), (1, 0)]
    arm_view = features[i.tolist().index(0)]
    assert abs(float(arm_view[0]) - 0.4) < 1e-6  # IoU
    assert float(arm_view[1]) == 1.0  # the arm lies wholly inside the chromosome's box
    assert abs(float(arm_view[2]) - 0.4) < 1e-6  # and covers 40% of it
    assert float(arm_view[4]) == 0.0  # the chromosome's box scores lower


def test_detector_with_a_set_rescorer_predicts_and_round_trips() -> None:
    torch.manual_seed(0)
    config = tiny_config(
        fpn=True, head="fc", repulsion="none", cascade_ious=(0.6,), rescorer=True, rescorer_kind="set"
    ).model
    model = build_detector(config).eval()
    assert isinstance(model.roi_heads.rescorer, SetRescorer)
    with torch.no_grad():
        out = model([torch.rand(3, 128, 128)])[0]
    assert bool((out["scores"][:-1] >= out["scores"][1:]).all())
    copy = build_detector(config)
    copy.load_state_dict(model.state_dict())
    assert "roi_heads.rescorer.pair_mean" in model.state_dict()


def test_train_rescorer_replaces_a_greedy_rescorer_by_a_set_one(tmp_path) -> None:  # noqa: ANN001
    from typer.testing import CliRunner

    from deepace.cli import app
    from deepace.data.coco import write_coco
    from deepace.inference import Counter, read_model_file, save_model
    from tests.helpers_detection import write_blob_records

    torch.manual_seed(0)
    config = tiny_config(fpn=True, head="fc", repulsion="none", rescorer=True)  # greedy, as shipped
    base = tmp_path / "base.pt"
    save_model(base, build_detector(config.model), config, score_threshold=0.3)
    records = write_blob_records(tmp_path / "imgs", 2, size=128)
    write_coco(records, tmp_path / "train.json")
    out = tmp_path / "set.pt"
    args = ["train-rescorer", str(base), "--train", str(tmp_path / "train.json"), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--kind", "set", "--epochs", "2"])
    assert result.exit_code == 0, result.output
    payload = read_model_file(out)
    assert payload["config"]["model"]["rescorer_kind"] == "set"
    assert "roi_heads.rescorer.pair_mean" in payload["state_dict"]
    assert "roi_heads.rescorer.feature_mean" not in payload["state_dict"]  # the greedy one is gone
    counted = Counter(out).count_image(records[0].path)
    assert counted.error is None and bool((counted.scores[:-1] >= counted.scores[1:]).all())
