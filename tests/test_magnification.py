"""Magnification advice (deepace/magnification.py): chromosome width from the pixels, and when to advise."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from deepace.cli import app
from deepace.data.images import paper_preprocess, rescale_gray
from deepace.data.synth import make_spread
from deepace.inference import save_model
from deepace.magnification import (
    BATCH,
    BATCH_TOLERANCE,
    TOLERANCE,
    chromosome_width,
    pixel_repetition,
    suggested_magnification,
    training_widths,
)
from deepace.models.detector import build_detector
from tests.helpers_detection import tiny_config


def _spread(size: int, seed: int = 3) -> np.ndarray:
    return make_spread(np.random.default_rng(seed), 46, size, nuclei=0, debris=0)[0]


def test_width_scales_with_the_image() -> None:
    gray = _spread(512)
    width = chromosome_width(gray)
    assert width is not None and 5 < width < 15
    assert chromosome_width(rescale_gray(gray, 2.0)) == pytest.approx(2 * width, rel=0.15)
    assert chromosome_width(rescale_gray(gray, 0.7)) == pytest.approx(0.7 * width, rel=0.15)


def test_width_of_a_bar_of_known_width() -> None:
    gray = np.full((200, 200), 255, np.uint8)
    gray[40:160, 90:110] = 60  # a dark bar 20 px wide
    assert chromosome_width(gray) == pytest.approx(20, rel=0.15)
    assert chromosome_width(np.full((100, 100), 255, np.uint8)) is None  # nothing dark


def _repeated(gray: np.ndarray, k: int) -> np.ndarray:
    return np.repeat(np.repeat(gray, k, axis=0), k, axis=1)


def test_pixel_repetition_finds_nearest_neighbour_enlargements() -> None:
    gray = _spread(384)
    assert pixel_repetition(gray) == 1
    assert pixel_repetition(_repeated(gray, 2)) == 2
    assert pixel_repetition(_repeated(gray, 3)[1:, 2:]) == 3  # cropped: blocks not aligned with the corner
    assert pixel_repetition(rescale_gray(gray, 2.0)) == 1  # enlarged by interpolation: not blocky
    assert pixel_repetition(np.full((200, 200), 255, np.uint8)) == 1  # flat: nothing to tell
    assert pixel_repetition(_repeated(gray[:3, :3], 2)) == 1  # too small to judge


def test_count_warns_about_a_blocky_image(tmp_path: Path) -> None:
    config = tiny_config()
    model = tmp_path / "tiny.pt"
    save_model(model, build_detector(config.model), config, score_threshold=0.3)
    gray = _spread(256)
    Image.fromarray(_repeated(gray, 2)).save(tmp_path / "zoomed.png")
    Image.fromarray(rescale_gray(gray, 2.0)).save(tmp_path / "smooth.png")
    result = CliRunner().invoke(app, ["count", "--weights", str(model), str(tmp_path)])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "zoomed.png looks enlarged 2x by repeating pixels" in output
    assert "smooth.png looks enlarged" not in output


def test_count_lists_a_few_blocky_images_and_numbers_the_rest() -> None:
    from io import StringIO

    from rich.console import Console

    from deepace.cli.count_cmd import warn_about_repeated_pixels
    from deepace.inference import CellResult

    results = [CellResult(Path(f"cell{i}.png"), pixel_repetition=2 if i % 2 else 1) for i in range(16)]
    results.append(CellResult(Path("broken.png"), error="unreadable", pixel_repetition=3))
    out = StringIO()
    warn_about_repeated_pixels(results, Console(file=out, width=400), listed=5)
    lines = out.getvalue().splitlines()
    assert [line.split()[1] for line in lines[:5]] == [f"cell{i}.png" for i in (1, 3, 5, 7, 9)]
    assert lines[5] == "warning: 3 more images look enlarged that way."
    assert len(lines) == 6


def test_case_report_flags_blocky_cells_and_keeps_the_flag_after_review(tmp_path: Path) -> None:
    """A case's blocky cells raise one BLOCKY_IMAGES alert naming them; the factor is kept in model.json, so
    the report rebuilt from it (as after a review) still carries the alert."""
    from deepace.cli.case_cmds import count_case
    from deepace.inference import Counter
    from deepace.report import case as case_io
    from deepace.report import page as case_report
    from deepace.report.rules import repeated_pixel_flags

    assert repeated_pixel_flags({}) == []
    assert "1 cell looks enlarged" in repeated_pixel_flags({"a.png": 2})[0].message
    config = tiny_config()
    model = tmp_path / "tiny.pt"
    save_model(model, build_detector(config.model), config, score_threshold=0.3)
    case = tmp_path / "case"
    case.mkdir()
    Image.fromarray(_spread(256, 0)).save(case / "camera.png")
    Image.fromarray(_repeated(_spread(256, 1), 3)).save(case / "zoomed.png")
    # a fluorescence spread is inverted and stretched before counting: pointwise, so blocks stay blocks
    Image.fromarray(_repeated(255 - _spread(256, 2), 2)).save(case / "zoomed_dapi.png")
    results, paths = count_case(case, Counter(model), progress=False)
    assert {r.image.name: r.pixel_repetition for r in results} == {
        "camera.png": 1,
        "zoomed.png": 3,
        "zoomed_dapi.png": 2,
    }
    flags = [f for f in json.loads(paths["json"].read_text())["flags"] if f["code"] == "BLOCKY_IMAGES"]
    assert len(flags) == 1 and flags[0]["severity"] == "alert"
    assert "zoomed.png (3x), zoomed_dapi.png (2x)" in flags[0]["message"]
    assert "camera.png" not in flags[0]["message"]
    reread = case_io.read_model_json(case)
    assert reread["zoomed.png"].pixel_repetition == 3 and reread["camera.png"].pixel_repetition == 1
    rebuilt = case_report.build_case_report(case, list(reread.values()), tmp_path / "again")
    assert "BLOCKY_IMAGES" in rebuilt["json"].read_text()


def test_advice_only_outside_the_tolerance() -> None:
    assert suggested_magnification([7.0, 7.5, 8.0, None], 15.0) == pytest.approx(2.0)
    assert suggested_magnification([30.0, 31.0], 15.0) == pytest.approx(0.5)
    assert suggested_magnification([14.0, 16.0], 15.0) is None
    assert suggested_magnification([15.0 / (TOLERANCE * 0.95)], 15.0) is None
    # a median over a batch varies less, so a smaller deviation is enough
    between = 15.0 / ((TOLERANCE + BATCH_TOLERANCE) / 2)
    assert suggested_magnification([between] * (BATCH - 1), 15.0) is None
    assert suggested_magnification([between] * BATCH, 15.0) is not None
    assert suggested_magnification([7.5], 15.0, current=2.0) is None  # already resized
    assert suggested_magnification([None], 15.0) is None and suggested_magnification([], 15.0) is None


def test_count_advises_magnification_for_small_chromosomes(tmp_path: Path) -> None:
    config = tiny_config()
    model = tmp_path / "tiny.pt"
    save_model(model, build_detector(config.model), config, score_threshold=0.3)
    typical = config.model.typical_chromosome_width[0]
    for name, size in (("small", 384), ("right", 1024)):
        folder = tmp_path / name
        folder.mkdir()
        for seed in range(2):
            Image.fromarray(_spread(size, seed)).save(folder / f"{seed}.png")
    args = ["count", "--weights", str(model), "--stain", "brightfield"]

    def run(*extra: str) -> str:
        result = CliRunner().invoke(app, [*args, *extra])
        assert result.exit_code == 0, result.output
        return " ".join(result.output.split())  # the console wraps long lines

    assert "brightfield images look about 0.5x the size" in run(str(tmp_path / "small"))
    assert "Try --magnification" not in run(str(tmp_path / "right")), typical
    assert "Try --magnification" not in run(str(tmp_path / "small"), "--magnification", "2")
    # counted at the wrong factor, the size it states is the size at that factor
    assert "look about 0.3x the size of the model's training images' (at --magnification 0.5)" in run(
        str(tmp_path / "small"), "--magnification", "0.5"
    )


def test_case_report_flags_a_case_at_the_wrong_magnification(tmp_path: Path) -> None:
    import json

    from deepace.cli.case_cmds import count_case
    from deepace.inference import Counter
    from deepace.report import case as case_io
    from deepace.report import page as case_report
    from deepace.report.rules import magnification_flags

    assert magnification_flags({}) == []
    config = tiny_config()
    model = tmp_path / "tiny.pt"
    save_model(model, build_detector(config.model), config, score_threshold=0.3)
    case = tmp_path / "case"
    case.mkdir()
    for seed in range(3):
        Image.fromarray(_spread(384, seed)).save(case / f"cell{seed}.png")
    results, paths = count_case(case, Counter(model, stain="brightfield"), progress=False)
    codes = [f["code"] for f in json.loads(paths["json"].read_text())["flags"]]
    assert "CHECK_MAGNIFICATION" in codes
    # kept in model.json, so a report rebuilt later (after review) still carries it
    assert set(case_io.model_magnification_advice(case)) == {"brightfield"}
    rebuilt = case_report.build_case_report(case, results, tmp_path / "again")
    assert "CHECK_MAGNIFICATION" in rebuilt["json"].read_text()
    _, paths = count_case(case, Counter(model, stain="brightfield", magnification=2.0), progress=False)
    assert "CHECK_MAGNIFICATION" not in paths["json"].read_text()


def _write_spreads(folder: Path, n: int, size: int, fluorescent: bool = False) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in range(n):
        gray = _spread(size, seed)
        path = folder / f"cell{seed}.png"
        Image.fromarray(255 - gray if fluorescent else gray).save(path)
        paths.append(path)
    return paths


def test_training_widths_per_stain(tmp_path: Path) -> None:
    brightfield = _write_spreads(tmp_path / "g", BATCH, 512)
    fluorescent = _write_spreads(tmp_path / "f", BATCH, 768, fluorescent=True)  # chromosomes 1.5x as wide
    widths = training_widths([*brightfield, *brightfield, *fluorescent], lambda stain: 1.0)
    assert set(widths) == {"brightfield", "fluorescence"}
    each = [chromosome_width(paper_preprocess(_spread(512, seed))) for seed in range(BATCH)]
    assert widths["brightfield"] == pytest.approx(float(np.median(each)), rel=0.02)
    assert widths["fluorescence"] == pytest.approx(1.5 * widths["brightfield"], rel=0.15)
    # measured as the model sees them: enlarging DAPI images first does not change their width in pixels
    enlarged = training_widths(fluorescent, lambda stain: 2.0 if stain == "fluorescence" else 1.0)
    assert enlarged["fluorescence"] == pytest.approx(widths["fluorescence"], rel=0.1)
    # a stain seen in fewer than BATCH images is not reported
    assert set(training_widths([*brightfield, *fluorescent[: BATCH - 1]], lambda s: 1.0)) == {"brightfield"}
    # reading stops at max_reads
    assert training_widths(brightfield, lambda stain: 1.0, max_reads=BATCH - 1) == {}


def test_train_sets_the_typical_width_from_its_images(tmp_path: Path) -> None:
    from deepace.config import Config
    from deepace.data.coco import write_coco
    from deepace.data.records import ImageRecord

    paths = _write_spreads(tmp_path / "g", BATCH, 512)
    boxes = np.array([[10.0, 10.0, 40.0, 60.0]], np.float32)
    write_coco([ImageRecord(p, boxes, width=512, height=512) for p in paths], tmp_path / "train.json")
    config = tiny_config(iterations=1)
    save_model(tmp_path / "model.pt", build_detector(config.model), config, 0.5)
    base = ["train", "--train", str(tmp_path / "train.json"), "--init", str(tmp_path / "model.pt")]
    result = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    brightfield, fluorescence = Config.load(tmp_path / "run" / "config.json").model.typical_chromosome_width
    assert brightfield == pytest.approx(training_widths(paths, lambda stain: 1.0)["brightfield"], abs=0.05)
    assert brightfield != config.model.typical_chromosome_width[0]
    assert fluorescence == config.model.typical_chromosome_width[1]  # no DAPI images: kept
    given = ["--set", "model.typical_chromosome_width=[20.0, 10.0]"]
    result = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "run2"), *given])
    assert result.exit_code == 0, result.output
    assert Config.load(tmp_path / "run2" / "config.json").model.typical_chromosome_width == (20.0, 10.0)
