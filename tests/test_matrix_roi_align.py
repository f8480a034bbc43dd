"""MatrixRoIAlign (deepace/models/matrix_roi_align.py) pools what torchvision's MultiScaleRoIAlign pools,
including the kernel's edge rules, for several images and pyramid levels."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign, roi_align

from deepace.models.matrix_roi_align import (
    MatrixRoIAlign,
    bilinear_taps,
    pixels_by_channel,
    roi_align_matrix,
)


def test_bilinear_taps_follow_the_kernels_edge_rules() -> None:
    coords = torch.tensor([-1.5, -0.5, 0.0, 2.25, 8.6, 9.0, 10.0, 10.5])
    valid, low, high, w_low, w_high = bilinear_taps(coords, 10)
    assert valid.tolist() == [False, True, True, True, True, True, True, False]
    assert low[1:7].tolist() == [0, 0, 2, 8, 9, 9]  # before the first pixel: read it; past the last: the last
    assert high[1:7].tolist() == [1, 1, 3, 9, 9, 9]
    torch.testing.assert_close(w_high[1:7], torch.tensor([0.0, 0.0, 0.25, 0.6, 0.0, 0.0]))
    torch.testing.assert_close(w_low + w_high, torch.ones(8))


def test_one_box_by_hand() -> None:
    """Box (0.5, 0.5)–(2.5, 2.5) on a 4×4 map, one bin, one sample: the sample is the box's centre (1.5,
    1.5), midway between pixels 1 and 2 on both axes, so the bin is the mean of those 4 pixels."""
    matrix = roi_align_matrix(
        torch.tensor([[0.5, 0.5, 2.5, 2.5]]),
        column_offsets=torch.tensor([0]),
        map_sizes=torch.tensor([[4, 4]]),
        scales=torch.tensor([1.0]),
        output_size=(1, 1),
        sampling_ratio=1,
        columns=16,
    )
    expected = torch.zeros(4, 4)
    expected[1:3, 1:3] = 0.25
    torch.testing.assert_close(matrix.to_dense().reshape(4, 4), expected)


def random_boxes(n: int, size: float, generator: torch.Generator) -> torch.Tensor:
    """Boxes of every kind: inside, partly outside, thinner than a pixel, along the far edges."""
    xy = torch.rand(n, 2, generator=generator) * (size * 1.1) - size * 0.05
    wh = torch.rand(n, 2, generator=generator) * size * 0.4
    wh[: n // 5] *= 0.01  # thinner than a feature pixel: the kernel widens them to 1
    boxes = torch.cat([xy, xy + wh], dim=1)
    boxes[-3:] = torch.tensor(
        [[size - 9.0, 0.0, size + 4.0, 12.0], [0.0, size - 3.0, 7.0, size], [-8.0, -8.0, 3.0, 3.0]]
    )
    return boxes


@pytest.mark.parametrize(("output_size", "sampling_ratio"), [(7, 2), (3, 4), ((5, 3), 1)])
def test_matches_torchvision_on_several_images_and_levels(output_size, sampling_ratio) -> None:  # noqa: ANN001
    g = torch.Generator().manual_seed(0)
    features = {
        "0": torch.rand(2, 6, 30, 40, generator=g),
        "1": torch.rand(2, 6, 15, 20, generator=g).contiguous(memory_format=torch.channels_last),
        "pool": torch.rand(2, 6, 8, 10, generator=g),
    }
    shapes = [(240, 320), (240, 320)]
    boxes = [random_boxes(60, 240.0, g), random_boxes(25, 240.0, g)]
    reference = MultiScaleRoIAlign(["0", "1"], output_size, sampling_ratio)
    matrix = MatrixRoIAlign.like(reference)
    expected = reference(features, boxes, shapes)
    got = matrix(features, boxes, shapes)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert matrix.scales == reference.scales
    # one level, and an image without boxes
    single = MultiScaleRoIAlign(["0"], output_size, sampling_ratio)
    boxes = [boxes[0][:0], boxes[1]]
    torch.testing.assert_close(
        MatrixRoIAlign.like(single)(features, boxes, shapes),
        single(features, boxes, shapes),
        rtol=1e-5,
        atol=1e-5,
    )


def test_feature_layout_is_reused_only_for_the_same_maps() -> None:
    g = torch.Generator().manual_seed(1)
    features = {"0": torch.rand(1, 4, 20, 24, generator=g), "1": torch.rand(1, 4, 10, 12, generator=g)}
    shapes = [(160, 192)]
    boxes = [random_boxes(30, 160.0, g)]
    reference = MultiScaleRoIAlign(["0", "1"], 7, 2)
    own, context = MatrixRoIAlign.like(reference), MatrixRoIAlign.like(MultiScaleRoIAlign(["0", "1"], 3, 4))
    own(features, boxes, shapes)
    context(features, boxes, shapes)  # another pooler on the same maps: the same layout
    laid_out = pixels_by_channel(list(features.values()))
    assert laid_out is pixels_by_channel(list(features.values()))
    # new maps (the next spread), even of the same shape, are laid out again
    features = {name: f + 1.0 for name, f in features.items()}
    torch.testing.assert_close(
        own(features, boxes, shapes), reference(features, boxes, shapes), rtol=1e-5, atol=1e-5
    )
    assert pixels_by_channel(list(features.values())) is not laid_out


def test_no_boxes_and_adaptive_sampling() -> None:
    features = {"0": torch.rand(1, 4, 10, 10)}
    pool = MatrixRoIAlign(["0"], 7, 2)
    assert pool(features, [torch.zeros(0, 4)], [(80, 80)]).shape == (0, 4, 7, 7)
    with pytest.raises(ValueError, match="fixed sampling_ratio"):
        MatrixRoIAlign(["0"], 7, 0)(features, [torch.tensor([[0.0, 0.0, 20.0, 20.0]])], [(80, 80)])


def test_single_level_equals_roi_align() -> None:
    g = torch.Generator().manual_seed(1)
    feature = torch.rand(1, 3, 20, 24, generator=g)
    boxes = random_boxes(40, 160.0, g)
    rois = torch.cat([torch.zeros(len(boxes), 1), boxes], dim=1)
    expected = roi_align(feature, rois, 7, spatial_scale=1 / 8, sampling_ratio=2)
    got = MatrixRoIAlign(["0"], 7, 2)({"0": feature}, [boxes], [(160, 192)])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
