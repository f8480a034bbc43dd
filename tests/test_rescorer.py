"""Learned overlap rescoring (model.rescorer): keep two crossing chromosomes, drop a second box on one."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import nms

from deepace.models.detector import build_detector
from deepace.models.rescorer import (
    ACCEPT_PROBABILITY,
    Candidates,
    OverlapRescorer,
    box_features,
    overlap_features,
    pair_geometry,
    relation_features,
    select_candidates,
)
from deepace.rescoring import LabelledCandidates, fit_rescorer, match_labels
from tests.helpers_detection import tiny_config

# Two chromosomes crossing as an X-ish pair: their boxes overlap at IoU 0.6 (NMS 0.5 keeps one).
CHROMOSOME_A = [100.0, 100.0, 140.0, 200.0]
CHROMOSOME_B = [100.0, 125.0, 140.0, 225.0]  # A shifted down by a quarter: IoU 75/125 = 0.6
SECOND_BOX_ON_A = [100.0, 104.0, 140.0, 200.0]  # IoU 0.96 with A
PART_OF_A = [100.0, 100.0, 140.0, 150.0]  # one arm of A: inside it, IoU 0.5


def logits_for(scores: list[float]) -> torch.Tensor:
    p = torch.tensor(scores)
    return torch.stack([torch.zeros_like(p), torch.log(p / (1 - p))], dim=1)


def candidates(boxes: list[list[float]], scores: list[float], stages: int = 1) -> Candidates:
    s = torch.tensor(scores)
    return Candidates(torch.tensor(boxes), s[:, None].expand(-1, stages).clone(), s)


def test_match_labels_claims_each_chromosome_once_in_score_order() -> None:
    truth = torch.tensor([CHROMOSOME_A, CHROMOSOME_B])
    boxes = torch.tensor([CHROMOSOME_A, SECOND_BOX_ON_A, CHROMOSOME_B, [300.0, 300, 340, 400]])
    # The second box on A overlaps B at IoU 0.62 too; it is still A's, so no chromosome (AP would match it
    # to B).
    assert match_labels(boxes, truth).tolist() == [True, False, True, False]
    assert match_labels(boxes[[1, 0, 2]], truth).tolist() == [True, False, True]


def test_candidates_merge_near_identical_boxes_only() -> None:
    boxes = torch.tensor([CHROMOSOME_A, SECOND_BOX_ON_A, CHROMOSOME_B, [0.0, 0, 10, 10]])
    selected = select_candidates(
        boxes, [logits_for([0.9, 0.8, 0.7, 0.01])], score_floor=0.05, candidate_iou=0.8
    )
    assert selected.boxes.tolist() == [CHROMOSOME_A, CHROMOSOME_B]  # the near-copy merged, the faint one out
    assert torch.allclose(selected.scores, torch.tensor([0.9, 0.7]))
    two_stages = select_candidates(
        boxes, [logits_for([0.9, 0.8, 0.7, 0.001]), logits_for([0.5, 0.5, 0.5, 0.5])], 0.05, 0.8
    )
    assert torch.allclose(two_stages.stage_scores, torch.tensor([[0.9, 0.5], [0.7, 0.5]]))
    # The score is the softmax of the stages' mean logits: logit(0.9) / 2 = log(3), so 0.75.
    assert torch.allclose(two_stages.scores[0], torch.tensor(0.75))


def test_features_read_only_higher_scored_accepted_boxes() -> None:
    c = candidates([CHROMOSOME_A, CHROMOSOME_B, SECOND_BOX_ON_A], [0.9, 0.8, 0.7])
    n = 3
    none = relation_features(c, torch.zeros(n, n, dtype=torch.bool))
    first = relation_features(c, torch.tensor([True, False, False])[None, :].expand(n, n))
    every = relation_features(c, torch.ones(n, n, dtype=torch.bool))
    accepted_iou = -7  # first of the seven "against accepted" features: the largest IoU
    assert none[:, accepted_iou].tolist() == [0.0, 0.0, 0.0]
    assert first[0, accepted_iou] == 0.0  # nothing scores higher than the first
    assert abs(float(first[1, accepted_iou]) - 0.6) < 1e-6
    assert abs(float(first[2, accepted_iou]) - 0.96) < 1e-6
    # Accepting the lowest-scored box changes nobody's features: it comes after them all.
    assert torch.equal(every[:, accepted_iou], torch.tensor([0.0, 0.6, float(first[2, accepted_iou])]))


def crossing_training_set(n: int = 60) -> list[LabelledCandidates]:
    """Cells of two crossing chromosomes (found first at A), each with a near-copy of A's box and a box on
    one arm of A: the copies and arms are no chromosomes."""
    samples, generator = [], torch.Generator().manual_seed(0)
    for _ in range(n):
        shift = torch.rand(1, generator=generator).item() * 50
        jitter = torch.rand(4, generator=generator) * 3
        a, b = torch.tensor(CHROMOSOME_A) + shift, torch.tensor(CHROMOSOME_B) + shift
        boxes = torch.stack(
            [a, torch.tensor(SECOND_BOX_ON_A) + shift + jitter, b, torch.tensor(PART_OF_A) + shift]
        )
        scores = torch.tensor([0.95, 0.9, 0.85, 0.6]) - torch.rand(4, generator=generator) * 0.05
        c = Candidates(boxes, scores[:, None], scores)
        samples.append(LabelledCandidates(c, match_labels(boxes, torch.stack([a, b]))))
    return samples


def test_rescorer_keeps_crossing_chromosomes_that_nms_merges_and_drops_second_boxes() -> None:
    samples = crossing_training_set()
    assert samples[0].labels.tolist() == [True, False, True, False]
    rescorer = OverlapRescorer(num_stages=1)
    result = fit_rescorer(rescorer, samples, epochs=60, batch_size=64, progress=False)
    assert result["accuracy"] == 1.0
    cell = candidates([CHROMOSOME_A, SECOND_BOX_ON_A, CHROMOSOME_B, PART_OF_A], [0.93, 0.88, 0.83, 0.58])
    kept = rescorer(cell) >= ACCEPT_PROBABILITY
    assert kept.tolist() == [True, False, True, False]
    assert 2 not in nms(cell.boxes, cell.scores, 0.5).tolist()  # the paper's NMS drops the crossing B


def test_greedy_inference_sees_the_features_training_builds_from_the_same_decisions() -> None:
    torch.manual_seed(0)
    rescorer = OverlapRescorer(num_stages=2).eval()
    boxes = torch.rand(12, 2) * 100
    boxes = torch.cat([boxes, boxes + 20 + torch.rand(12, 2) * 40], dim=1)
    scores = torch.linspace(0.95, 0.1, 12)
    c = Candidates(boxes, torch.rand(12, 2), scores)
    greedy = rescorer(c)
    decided = (greedy >= ACCEPT_PROBABILITY)[None, :].expand(12, 12)
    batch = torch.sigmoid(rescorer.logits(relation_features(c, decided)))
    assert torch.allclose(greedy, batch, atol=1e-6)


def plain_greedy_pass(rescorer: OverlapRescorer, c: Candidates) -> torch.Tensor:
    """The greedy pass written candidate by candidate from the masked pair matrices (the reference)."""
    n = len(c.boxes)
    geometry = pair_geometry(c)
    fixed = box_features(c, geometry)
    accepted = torch.zeros(1, n, dtype=torch.bool)
    probabilities = torch.zeros(n)
    for i in range(n):
        rows = tuple(m[i : i + 1] for m in geometry)
        row = torch.cat([fixed[i : i + 1], overlap_features(accepted, rows, c.scores)], dim=1)
        probabilities[i] = torch.sigmoid(rescorer.logits(row))[0]
        accepted[0, i] = bool(probabilities[i] >= ACCEPT_PROBABILITY)
    return probabilities


@torch.no_grad()
def decisions_both_ways(rescorer: OverlapRescorer, c: Candidates) -> None:
    """Shift the net's output (an untrained net accepts everything) until its greedy pass over `c`
    accepts some candidates and rejects others."""
    rescorer.net[-1].weight.mul_(50.0)
    low, high = -500.0, 500.0
    for _ in range(40):
        middle = (low + high) / 2
        rescorer.net[-1].bias.fill_(middle)
        accepted = int((plain_greedy_pass(rescorer, c) >= ACCEPT_PROBABILITY).sum())
        if 0 < accepted < len(c.boxes):
            return
        low, high = (low, middle) if accepted else (middle, high)


@pytest.mark.parametrize(("appearance", "origin"), [(False, False), (True, False), (False, True)])
def test_the_greedy_pass_equals_the_plain_one_to_the_bit(appearance: bool, origin: bool) -> None:
    for seed in range(6):
        torch.manual_seed(seed)
        rescorer = OverlapRescorer(num_stages=3, appearance=appearance, origin=origin).eval()
        n = 40
        corners = torch.rand(n, 2) * 120  # a crowded cell: most boxes overlap several others
        boxes = torch.cat([corners, corners + 15 + torch.rand(n, 2) * 50], dim=1)
        scores = torch.rand(n).sort(descending=True).values
        embeddings = torch.randn(n, 16).half() if appearance else None
        origins = torch.stack([(torch.rand(n) < 0.3).float(), torch.rand(n)], dim=1) if origin else None
        c = Candidates(boxes, torch.rand(n, 3), scores, embeddings, origins)
        decisions_both_ways(rescorer, c)
        expected = plain_greedy_pass(rescorer, c)
        assert 0 < int((expected >= ACCEPT_PROBABILITY).sum()) < n  # decisions both ways
        assert torch.equal(rescorer(c), expected)
    one = Candidates(
        boxes[:1],
        torch.rand(1, 3),
        scores[:1],
        None if embeddings is None else embeddings[:1],
        None if origins is None else origins[:1],
    )
    assert torch.equal(rescorer(one), plain_greedy_pass(rescorer, one))


def test_proposals_the_stages_moved_away_join_the_candidates_scored_by_the_first_stage() -> None:
    from deepace.models.roi_heads import with_moved_proposals

    kept_in_place = [100.0, 102.0, 140.0, 200.0]  # refined to A: IoU 0.98
    pulled_off = [100.0, 60.0, 140.0, 160.0]  # refined onto B: IoU 35 / 165
    refined = torch.tensor([CHROMOSOME_A, CHROMOSOME_B])
    first, last = logits_for([0.8, 0.6]), logits_for([0.9, 0.95])
    boxes, logits, origin = with_moved_proposals(
        refined, torch.tensor([kept_in_place, pulled_off]), [first, last], 0.7
    )
    assert boxes.tolist() == [CHROMOSOME_A, CHROMOSOME_B, pulled_off]
    for stage, own in zip(
        logits, (first, last), strict=True
    ):  # the proposal: what the first stage said of it
        assert torch.equal(stage, torch.cat([own, first[1:]]))
    assert origin[:, 0].tolist() == [0.0, 0.0, 1.0]
    assert torch.allclose(origin[:, 1], torch.tensor([98 / 100, 35 / 165, 35 / 165]), atol=1e-4)
    selected = select_candidates(boxes, logits, 0.05, 0.8, origin=origin)
    assert selected.origin is not None and selected.origin[:, 0].tolist() == [0.0, 0.0, 1.0]


def test_a_detector_offering_moved_proposals_rescores_them() -> None:
    torch.manual_seed(0)
    config = tiny_config(
        fpn=True, head="fc", repulsion="none", cascade_ious=(0.6,), rescorer=True, rescorer_proposal_iou=1.01
    ).model
    model = build_detector(config).eval()
    images = [torch.rand(3, 128, 128)]
    with torch.no_grad():
        images_t, _ = model.transform(images)
        features = model.backbone(images_t.tensors)
        proposals, _ = model.rpn(images_t, features)
        found = model.roi_heads.candidates(features, proposals, images_t.image_sizes)[0]
        out = model(images)[0]
    assert found.origin is not None and bool((found.origin[:, 0] == 1).any())  # IoU < 1.01: every proposal
    assert len(found.boxes) > 0 and len(out["boxes"]) <= len(found.boxes)
    with pytest.raises(ValueError, match="moved proposals"):
        build_detector(
            tiny_config(
                fpn=True, head="fc", rescorer=True, rescorer_appearance=True, rescorer_proposal_iou=0.7
            ).model
        )
    with pytest.raises(ValueError, match="set rescorer"):
        build_detector(
            tiny_config(
                fpn=True, head="fc", rescorer=True, rescorer_kind="set", rescorer_proposal_iou=0.7
            ).model
        )


def test_detector_with_a_rescorer_predicts_and_round_trips() -> None:
    torch.manual_seed(0)
    config = tiny_config(fpn=True, head="fc", repulsion="none", cascade_ious=(0.6,), rescorer=True).model
    model = build_detector(config).eval()
    assert isinstance(model.roi_heads.rescorer, OverlapRescorer)
    with torch.no_grad():
        out = model([torch.rand(3, 128, 128)])[0]
    assert set(out) == {"boxes", "scores", "labels"}
    assert bool((out["scores"][:-1] >= out["scores"][1:]).all())
    copy = build_detector(config)
    copy.load_state_dict(model.state_dict())  # strict: the rescorer's weights and normalisation included
    assert "roi_heads.rescorer.feature_mean" in model.state_dict()


def test_train_rescorer_command_writes_a_model_that_counts(tmp_path) -> None:  # noqa: ANN001
    from typer.testing import CliRunner

    from deepace.cli import app
    from deepace.data.coco import write_coco
    from deepace.inference import Counter, read_model_file, save_model
    from deepace.provenance import META_KEY, fingerprints
    from tests.helpers_detection import write_blob_records

    torch.manual_seed(0)
    config = tiny_config(fpn=True, head="fc", repulsion="none")
    base = tmp_path / "base.pt"
    save_model(base, build_detector(config.model), config, 0.3, meta={"recipe": "how the base was made"})
    records = write_blob_records(tmp_path / "imgs", 3, size=128)
    write_coco(records, tmp_path / "train.json")
    out, cache = tmp_path / "rescored.pt", tmp_path / "cands.pt"
    args = ["train-rescorer", str(base), "--train", str(tmp_path / "train.json"), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--epochs", "2", "--cache", str(cache), "--flips", "all"])
    assert result.exit_code == 0, result.output
    assert "rescorer:" in result.output and cache.exists()
    payload = read_model_file(out)
    assert payload["config"]["model"]["rescorer"] is True
    assert payload["meta"]["base_meta"] == {"recipe": "how the base was made"}  # provenance carried over
    assert payload["meta"][META_KEY] == fingerprints(r.path for r in records)  # the rescorer's training cells
    # Not calibrated: the base model's threshold (0.3, for its own scores) is not carried over.
    assert payload["score_threshold"] == ACCEPT_PROBABILITY and payload["stain_thresholds"] == {}
    assert any(k.startswith("roi_heads.rescorer.") for k in payload["state_dict"])
    assert len(torch.load(cache, weights_only=False)) == 3 * 4  # each image and its three flips
    counted = Counter(out).count_image(records[0].path)
    assert counted.error is None and bool((counted.scores[:-1] >= counted.scores[1:]).all())


def test_appearance_compares_a_box_with_its_most_overlapping_neighbour() -> None:
    c = candidates([CHROMOSOME_A, SECOND_BOX_ON_A, CHROMOSOME_B], [0.9, 0.8, 0.7])
    c.embeddings = torch.tensor([[1.0, 0.0], [2.0, 0.1], [0.0, 1.0]])  # the copy looks like A, B does not
    features = relation_features(c, torch.zeros(3, 3, dtype=torch.bool))
    per_box = 1 + 1 + 2 + 1
    similarity_to_higher = features[:, per_box + 7]
    assert similarity_to_higher[0] == 0.0  # no higher-scored neighbour
    assert similarity_to_higher[1] > 0.99  # the second box on A, against A
    assert abs(float(similarity_to_higher[2])) < 0.06  # B's best-overlapping higher box is the copy of A
    assert features.shape[1] == 5 + 2 * 8 and features[:, -1].abs().sum() == 0  # nothing accepted yet


def test_fine_tuning_a_model_with_a_rescorer_says_to_refit_it(tmp_path) -> None:  # noqa: ANN001
    from typer.testing import CliRunner

    from deepace.cli import app
    from deepace.data.coco import write_coco
    from deepace.inference import save_model
    from tests.helpers_detection import write_blob_records

    config = tiny_config(iterations=1, fpn=True, head="fc", repulsion="none", rescorer=True)
    save_model(tmp_path / "model.pt", build_detector(config.model), config, 0.5)
    write_coco(write_blob_records(tmp_path / "imgs", 2, size=128), tmp_path / "train.json")
    args = ["train", "--init", str(tmp_path / "model.pt"), "--train", str(tmp_path / "train.json")]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "deepace train-rescorer" in result.output


def test_cli_flip_choices_are_the_collectors() -> None:
    from deepace.cli.train_cmds import Flips
    from deepace.rescoring import FLIP_VIEWS

    assert [f.value for f in Flips] == list(FLIP_VIEWS)
