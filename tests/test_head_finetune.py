"""Head-only fine-tuning on cached features (deepace.head_finetune, `deepace train-heads`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from deepace.config import Config
from deepace.head_finetune import (
    HeadSchedule,
    average_heads,
    cache_views,
    cached_candidates,
    cached_image_list,
    cached_losses,
    train_heads,
    training_pool,
    view_flips,
)
from deepace.inference import Detector
from deepace.models.detector import build_detector
from deepace.rescoring import image_candidates
from tests.helpers_detection import tiny_config, write_blob_records


def tiny_cascade() -> tuple[torch.nn.Module, Config]:
    torch.manual_seed(0)
    # brightfield_levels off: with these two-grey test images mapped to blobs of 88 on white, which of the
    # untrained RPN's near-equal proposals survive Soft-NMS changes with the float16 rounding of the cached
    # features (45% of them differ); at the raw greys (60 on 235) they agree, which is what is tested here
    config = tiny_config(
        fpn=True, head="fc", repulsion="none", cascade_ious=(0.6,), rescorer=True, brightfield_levels=None
    )
    return build_detector(config.model).eval(), config


@pytest.fixture(scope="module")
def cached(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict], list, Path]:
    tmp = tmp_path_factory.mktemp("heads")
    model, config = tiny_cascade()
    records = write_blob_records(tmp / "imgs", 2, size=128)
    source = tmp / "train.json"
    index = cache_views(model, config, {source: records}, 2, tmp / "cache", progress=False)
    return tmp / "cache", index, records, source


def test_view_flips_start_unflipped_then_distinct_flips_fixed_by_the_image() -> None:
    for image in range(20):
        flips = view_flips(image, 4)
        assert flips[0] == (False, False) and len(set(flips)) == 4
        assert view_flips(image, 4) == flips and view_flips(image, 2) == flips[:2]
    assert len({tuple(view_flips(image, 2)) for image in range(20)}) > 1  # the flip varies by image
    with pytest.raises(ValueError):
        view_flips(0, 5)


def test_the_cache_lists_every_view_and_flips_the_targets(cached) -> None:  # noqa: ANN001
    folder, index, records, source = cached
    assert [(item["record"], item["view"]) for item in index] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert json.loads((folder / "index.json").read_text()) == index
    for i in range(len(records)):
        plain, flipped = (torch.load(folder / index[2 * i + v]["file"], weights_only=False) for v in (0, 1))
        assert all(f.dtype == torch.float16 for f in plain["features"].values())
        height, width = plain["image_size"]
        horizontal, vertical = view_flips(i, 2)[1]
        expected = plain["boxes"].clone()
        if horizontal:
            expected[:, [0, 2]] = width - plain["boxes"][:, [2, 0]]
        if vertical:
            expected[:, [1, 3]] = height - plain["boxes"][:, [3, 1]]
        torch.testing.assert_close(
            flipped["boxes"][expected[:, 0].argsort()], expected[expected[:, 0].argsort()], atol=0.01, rtol=0
        )
        # to_image takes view 0's network pixels back to the annotation's pixels
        scale = torch.tensor(plain["to_image"] * 2)
        torch.testing.assert_close(plain["boxes"] * scale, plain["truth"], atol=0.01, rtol=0)


def test_cached_candidates_are_the_ones_inference_gives_the_rescorer(cached) -> None:  # noqa: ANN001
    folder, index, records, _ = cached
    model, config = tiny_cascade()
    samples = cached_candidates(model, folder, index, progress=False)
    assert len(samples) == len(records)  # view 0 of each image only
    detector = Detector(model, config)
    for record, sample in zip(records, samples, strict=True):
        gray, stain = detector.prepare_with_stain(record.path)
        live = image_candidates(detector, gray, stain)
        assert len(live.boxes) == len(sample.candidates.boxes) > 0
        # features stored in float16: the boxes agree to a fraction of a pixel, not to the bit
        torch.testing.assert_close(sample.candidates.boxes, live.boxes, atol=0.05, rtol=0)
        torch.testing.assert_close(sample.candidates.scores, live.scores, atol=0.005, rtol=0)


def test_training_pool_draws_a_file_as_often_as_it_is_repeated(cached) -> None:  # noqa: ANN001
    _, index, _, source = cached
    assert training_pool(index) == [
        [index[0]["file"], index[1]["file"]],
        [index[2]["file"], index[3]["file"]],
    ]
    assert len(training_pool(index, {str(source): 3})) == 6


SCHEDULE = HeadSchedule(iterations=4, lr=0.02, warmup_iterations=1, checkpoint_every=2, log_every=1)


def heads_trained(cached, work: Path, on_log=None) -> torch.nn.Module:  # noqa: ANN001
    folder, index, _, _ = cached
    model, _ = tiny_cascade()
    train_heads(model, folder, training_pool(index), SCHEDULE, work, on_log=on_log, progress=False)
    return model


def test_only_the_head_stages_learn(cached, tmp_path) -> None:  # noqa: ANN001
    before, _ = tiny_cascade()
    after = heads_trained(cached, tmp_path)
    old = dict(before.named_parameters())
    changed = {name for name, p in after.named_parameters() if not torch.equal(p, old[name])}
    assert changed and all(n.startswith("roi_heads.") and ".rescorer." not in n for n in changed)
    assert any(n.startswith("roi_heads.stages.") for n in changed)  # the cascade stage too
    assert all(p.requires_grad for p in after.parameters()) and not after.training
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [line["iteration"] for line in lines] == [1, 2, 3, 4]
    assert all(line["loss"] > 0 for line in lines)


def test_factorised_head_layers_fine_tune_on_the_full_models_cache(cached, tmp_path) -> None:  # noqa: ANN001
    """model.fc6_rank on a trained full model (session 33's recipe): the backbone's cache is unchanged, so
    the factorised layers train on it, started from the full layers' truncated SVD."""
    from deepace.inference import network_from_payload, read_model_file, save_model

    folder, index, _, _ = cached
    model, config = tiny_cascade()
    save_model(tmp_path / "full.pt", model, config, 0.4, half=False)
    low, _ = network_from_payload(read_model_file(tmp_path / "full.pt"), ["model.fc6_rank=8"])
    start = {k: v.clone() for k, v in low.state_dict().items()}
    train_heads(low, folder, training_pool(index), SCHEDULE, tmp_path / "work", progress=False)
    changed = {k for k, v in low.state_dict().items() if not torch.equal(v, start[k])}
    assert {"roi_heads.box_head.fc6.down.weight", "roi_heads.stages.0.box_head.fc6.up.weight"} <= changed
    assert all(k.startswith("roi_heads.") for k in changed)


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(cached, tmp_path) -> None:  # noqa: ANN001
    straight = heads_trained(cached, tmp_path / "straight")

    def killed_after_iteration_3(line: dict) -> None:  # the run's folder as a kill then would leave it
        if line["iteration"] == 3:
            shutil.copytree(tmp_path / "again", tmp_path / "killed")

    heads_trained(cached, tmp_path / "again", on_log=killed_after_iteration_3)
    assert torch.load(tmp_path / "killed" / "last.pt", weights_only=False)["iteration"] == 2
    resumed = heads_trained(cached, tmp_path / "killed")
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name, atol=0, rtol=0)


def test_the_rpn_losses_on_a_cached_view_are_those_of_training_on_the_image(cached) -> None:  # noqa: ANN001
    from deepace.data.dataset import DetectionDataset
    from deepace.head_finetune import load_view

    folder, index, records, _ = cached
    model, config = tiny_cascade()
    dataset = DetectionDataset(
        records, config.model.preprocess_threshold, stain_scale=config.model.stain_scale
    )
    image, target = dataset.load(0, False, False)
    with torch.no_grad():
        images, targets = model.transform([image], [target])
        features = model.backbone(images.tensors)
        entry = load_view(folder / index[0]["file"])
        assert cached_image_list(entry, 8).tensors.shape[-2:] == images.tensors.shape[-2:]
        model.rpn.train()
        torch.manual_seed(3)  # the same anchors sampled (HNAS draws at random)
        _, live = model.rpn(images, features, targets)
        torch.manual_seed(3)
        from_cache = cached_losses(model, "rpn", entry)
    assert live.keys() == from_cache.keys() and live["loss_objectness"] > 0
    for name in live:  # cached features are float16
        torch.testing.assert_close(from_cache[name], live[name], atol=2e-3, rtol=1e-2)


def test_training_the_rpn_changes_only_the_rpn_and_its_fresh_proposals_feed_the_candidates(
    cached, tmp_path
) -> None:  # noqa: ANN001
    folder, index, _, _ = cached
    before, _ = tiny_cascade()
    unchanged = cached_candidates(before, folder, index, progress=False, fresh_proposals=True)
    for fresh, stored in zip(
        unchanged, cached_candidates(before, folder, index, progress=False), strict=True
    ):
        torch.testing.assert_close(fresh.candidates.boxes, stored.candidates.boxes, atol=0.05, rtol=0)
    model, _ = tiny_cascade()
    train_heads(model, folder, training_pool(index), SCHEDULE, tmp_path, progress=False, part="rpn")
    old = dict(before.named_parameters())
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, old[name])}
    assert changed and all(name.startswith("rpn.head.") for name in changed)
    assert "rpn" in torch.load(tmp_path / "last.pt", weights_only=False)
    moved = cached_candidates(model, folder, index, progress=False, fresh_proposals=True)
    assert any(
        a.candidates.boxes.shape != b.candidates.boxes.shape
        or not torch.allclose(a.candidates.boxes, b.candidates.boxes)
        for a, b in zip(moved, unchanged, strict=True)
    )
    with pytest.raises(ValueError, match="part"):
        train_heads(model, folder, training_pool(index), SCHEDULE, tmp_path / "x", part="backbone")


def test_train_heads_command_writes_a_model_that_counts_and_guards_its_work_dir(tmp_path) -> None:  # noqa: ANN001
    from typer.testing import CliRunner

    from deepace.cli import app
    from deepace.data.coco import write_coco
    from deepace.inference import Counter, read_model_file, save_model
    from deepace.provenance import META_KEY, fingerprints

    model, config = tiny_cascade()
    save_model(tmp_path / "base.pt", model, config, 0.4, meta={"recipe": "base"})
    records = write_blob_records(tmp_path / "imgs", 2, size=128)
    write_coco(records, tmp_path / "train.json")
    train = ["--train", str(tmp_path / "train.json")] * 2
    args = ["train-heads", str(tmp_path / "base.pt"), *train, "--work-dir", str(tmp_path / "work")]
    args += ["--out", str(tmp_path / "heads.pt"), "--iterations", "3", "--rescorer-epochs", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "rescorer refitted" in result.output and "uncalibrated" in result.output
    payload = read_model_file(tmp_path / "heads.pt")
    assert payload["meta"]["train_heads"]["iterations"] == 3 and "rescorer" in payload["meta"]
    assert payload["meta"]["base_meta"] == {"recipe": "base"}
    assert payload["meta"][META_KEY] == fingerprints(r.path for r in records)  # deepace.provenance
    assert len(list((tmp_path / "work" / "features").glob("*.pt"))) == 2 * 2  # each image once, two views
    counted = Counter(tmp_path / "heads.pt").count_image(records[0].path)
    assert counted.error is None
    again = CliRunner().invoke(app, args)  # same settings: the finished run is resumed, nothing redone
    assert again.exit_code == 0 and "resuming" in again.output
    other = CliRunner().invoke(app, [*args[:-4], "--iterations", "5", *args[-2:]])
    assert other.exit_code != 0 and "iterations" in other.output


def test_a_model_file_rebuilds_with_loss_overrides_and_its_own_weights(tmp_path: Path) -> None:
    from deepace.inference import network_from_payload, read_model_file, save_model

    model, config = tiny_cascade()
    save_model(tmp_path / "m.pt", model, config, 0.4, half=True)
    payload = read_model_file(tmp_path / "m.pt")
    rebuilt, same = network_from_payload(payload)
    assert same == config
    changed_model, changed = network_from_payload(
        payload, ["model.repulsion=tnrl", "model.repulsion_weight=5.0"]
    )
    assert (changed.model.repulsion, changed.model.repulsion_weight) == ("tnrl", 5.0)
    assert changed.model.repulsion != config.model.repulsion
    for net in (rebuilt, changed_model):
        for key, value in model.state_dict().items():
            assert net.state_dict()[key].dtype == value.dtype
            assert torch.equal(
                net.state_dict()[key], value.half().to(value.dtype) if value.is_floating_point() else value
            )


def test_average_heads_averages_only_the_head_stages_of_one_base() -> None:
    model, _ = tiny_cascade()
    base = model.state_dict()
    shifted = {
        k: v + 2.0 if k.startswith("roi_heads.") and v.is_floating_point() else v for k, v in base.items()
    }
    soup = average_heads([base, shifted])
    heads = [k for k in base if k.startswith("roi_heads.box") and base[k].is_floating_point()]
    rescorer = [k for k in base if k.startswith("roi_heads.rescorer.") and base[k].is_floating_point()]
    assert heads and rescorer
    for k in heads:
        assert torch.allclose(soup[k], base[k] + 1.0)
    for k in rescorer:  # refitted after the soup; kept from the first model
        assert torch.equal(soup[k], base[k])
    backbone = next(k for k in base if k.startswith("backbone.") and base[k].is_floating_point())
    assert soup[backbone] is base[backbone]
    rounded = {k: v.half().float() if v.is_floating_point() else v for k, v in base.items()}
    assert torch.allclose(average_heads([rounded, base])[heads[0]], base[heads[0]], atol=1e-3)
    other_base = dict(base) | {backbone: base[backbone] + 0.5}
    with pytest.raises(ValueError, match="base model"):
        average_heads([base, other_base])
    with pytest.raises(ValueError, match="no models"):
        average_heads([])
