"""The usual cytogenetic counting rules, as pure functions on a case's list of chromosome counts.

A lab counts 20 metaphases per patient; when a cell departs from the modal count the count is
extended to 30-50 cells to rule out mosaicism. Two cells with the same gain, or three with the same
loss, suggest a clone (ISCN). Counts alone cannot tell *which* chromosome is gained or lost, so these
flags say "possible" and ask for the karyotype to confirm.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass

NORMAL_COUNT = 46
MIN_CELLS = 20
EXTENDED_CELLS = (30, 50)
CLONE_GAIN_CELLS = 2
CLONE_LOSS_CELLS = 3

SEVERITIES = ("info", "warning", "alert")


@dataclass(frozen=True)
class Flag:
    """One finding for the reviewer: a stable code, a severity (info < warning < alert) and a sentence."""

    code: str
    severity: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def modal_count(counts: Sequence[int], expected: int = NORMAL_COUNT) -> int | None:
    """The most frequent count; a tie goes to the count closest to `expected`, then to the smaller one."""
    tied = tied_counts(counts)
    if not tied:
        return None
    return min(tied, key=lambda c: (abs(c - expected), c))


def tied_counts(counts: Sequence[int]) -> list[int]:
    """The counts sharing the highest frequency, smallest first (one count when the mode is clear)."""
    freq = Counter(counts)
    best = max(freq.values(), default=0)
    return sorted(c for c, n in freq.items() if n == best)


def middle_counts(counts: Sequence[int]) -> list[int]:
    """The middle count of the sorted counts; with an even number of cells the two middle ones, smallest
    first, when they differ."""
    ordered = sorted(counts)
    n = len(ordered)
    if n == 0:
        return []
    if n % 2:
        return [ordered[n // 2]]
    return sorted({ordered[n // 2 - 1], ordered[n // 2]})


def tied_median_counts(counts: Sequence[int]) -> list[int]:
    """The middle counts that frequency cannot separate: one count, or two equally frequent ones."""
    middle = middle_counts(counts)
    freq = Counter(counts)
    best = max((freq[c] for c in middle), default=0)
    return [c for c in middle if freq[c] == best]


def median_count(counts: Sequence[int], expected: int = NORMAL_COUNT) -> int | None:
    """The middle count; of two different middle counts the more frequent one, and of two equally frequent
    ones the one closest to `expected`, then the smaller one.

    Why, for counts not yet reviewed: a miscounted cell moves the mode of 20 counts more easily than their
    median. In simulated 20-cell cases of G-band validation cells, the shipped model's counts gave a
    normal patient's count as 46 in 93.5% of cases by the median and 90.2% by the mode, and a trisomy's as
    47 in 93.0% against 85.7% (BENCHMARKS.md, "Per case: the median of automatic counts")."""
    tied = tied_median_counts(counts)
    if not tied:
        return None
    return min(tied, key=lambda c: (abs(c - expected), c))


BASES = ("mode", "median")


def case_count(counts: Sequence[int], expected: int = NORMAL_COUNT, basis: str = "mode") -> int | None:
    """The count the rules read a case by: its modal count (ISCN), or with `basis="median"` its median."""
    if basis not in BASES:
        raise ValueError(f"basis must be one of {BASES}, not {basis!r}")
    return modal_count(counts, expected) if basis == "mode" else median_count(counts, expected)


def tied_case_counts(counts: Sequence[int], basis: str = "mode") -> list[int]:
    """The counts the case count was chosen from (more than one: a tie), as `tied_counts` for the mode."""
    return tied_counts(counts) if basis == "mode" else tied_median_counts(counts)


def cells_off_mode(counts: Sequence[int], mode: int | None = None) -> list[int]:
    """Indices of the cells whose count differs from the modal count."""
    if mode is None:
        mode = modal_count(counts)
    if mode is None:
        return []
    return [i for i, c in enumerate(counts) if c != mode]


def count_histogram(counts: Sequence[int]) -> dict[int, int]:
    """Count -> number of cells, sorted by count."""
    return dict(sorted(Counter(counts).items()))


def _cells(n: int) -> str:
    return f"{n} cell" if n == 1 else f"{n} cells"


def evaluate_counts(
    counts: Sequence[int],
    expected: int = NORMAL_COUNT,
    min_cells: int = MIN_CELLS,
    extended_cells: tuple[int, int] = EXTENDED_CELLS,
    clone_gain_cells: int = CLONE_GAIN_CELLS,
    clone_loss_cells: int = CLONE_LOSS_CELLS,
    basis: str = "mode",
) -> list[Flag]:
    """All the flags the counting rules raise for one case, most severe first. `basis`: read the case by
    its modal count (ISCN; for reviewed counts) or by its median (`median_count`; for automatic ones)."""
    n = len(counts)
    if n == 0:
        return [Flag("NO_CELLS", "alert", "No cell could be counted in this case.")]

    flags: list[Flag] = []
    mode = case_count(counts, expected, basis)
    assert mode is not None
    name = "modal" if basis == "mode" else "median"

    if n < min_cells:
        flags.append(
            Flag(
                "TOO_FEW_CELLS",
                "warning",
                f"Only {_cells(n)} counted; at least {min_cells} are needed for a standard count.",
            )
        )

    freq = Counter(counts)
    tied = tied_case_counts(counts, basis)
    if len(tied) > 1:
        # Ties go to the count closest to `expected` (modal_count), which would hide a trisomy whose cells
        # split evenly between 46 and 47: say so rather than report 46 quietly.
        flags.append(
            Flag(
                "TIED_MODE",
                "alert",
                f"No single {name} count: {' and '.join(map(str, tied))} are equally frequent "
                f"({_cells(freq[mode])} each); {mode} is shown. Review the cells or extend the "
                f"count before reading a constitutional count.",
            )
        )

    if mode != expected:
        kind = "gain" if mode > expected else "loss"
        flags.append(
            Flag(
                "ABNORMAL_MODE",
                "alert",
                f"{name.capitalize()} count is {mode}, not {expected}: possible constitutional {kind}"
                f" ({mode - expected:+d}). Confirm by karyotype.",
            )
        )

    flags += off_count_flags(counts, mode, n, name, extended_cells)
    flags += clone_flags(counts, mode, expected, name, clone_gain_cells, clone_loss_cells)
    return sort_flags(flags)


def off_count_flags(
    counts: Sequence[int],
    mode: int,
    n_cells: int,
    name: str = "modal",
    extended_cells: tuple[int, int] = EXTENDED_CELLS,
    of_reviewed: int | None = None,
) -> list[Flag]:
    """Cells of `counts` off the case count `mode`: with fewer than `extended_cells[0]` cells in the case
    (`n_cells`), extend the count to rule out mosaicism. `of_reviewed`: the counts are those of that many
    reviewed cells of a case not yet fully reviewed."""
    off = cells_off_mode(counts, mode)
    if not off:
        return []
    lo, hi = extended_cells
    of = f"of {n_cells}" if of_reviewed is None else f"of the {of_reviewed} reviewed"
    if n_cells < lo:
        return [
            Flag(
                "EXTEND_COUNT",
                "warning",
                f"{_cells(len(off))} {of} differ from the {name} count {mode}: "
                f"extend the count to {lo}-{hi} cells to rule out mosaicism.",
            )
        ]
    return [Flag("CELLS_OFF_MODE", "info", f"{_cells(len(off))} {of} differ from the {name} count {mode}.")]


def clone_flags(
    counts: Sequence[int],
    mode: int,
    expected: int = NORMAL_COUNT,
    name: str = "modal",
    clone_gain_cells: int = CLONE_GAIN_CELLS,
    clone_loss_cells: int = CLONE_LOSS_CELLS,
    of_reviewed: int | None = None,
) -> list[Flag]:
    """The clone and mosaicism findings (ISCN: two cells with the same gain, three with the same loss, or
    cells at `expected` beside an abnormal case count) of `counts` against the case count `mode`.
    `of_reviewed`: the counts are those of that many reviewed cells of a case not yet fully reviewed."""
    among = " cells" if of_reviewed is None else f" of the {of_reviewed} reviewed cells"
    freq = Counter(counts)
    flags: list[Flag] = []
    for count in sorted(freq):
        cells = freq[count]
        if count == expected != mode and cells >= min(clone_gain_cells, clone_loss_cells):
            flags.append(
                Flag(
                    "POSSIBLE_MOSAIC_NORMAL",
                    "alert",
                    f"{cells}{among} count {expected} while the {name} count is {mode}: possible mosaicism "
                    f"with a normal cell line.",
                )
            )
            continue
        if count > mode and cells >= clone_gain_cells:
            flags.append(
                Flag(
                    "POSSIBLE_CLONE_GAIN",
                    "alert",
                    f"{cells}{among} count {count} ({name} {mode}, {count - mode:+d}): possible clone or "
                    f"mosaicism with a gain. Karyotype these cells to see whether the same chromosome "
                    f"is gained.",
                )
            )
        elif count < mode and cells >= clone_loss_cells:
            flags.append(
                Flag(
                    "POSSIBLE_CLONE_LOSS",
                    "alert",
                    f"{cells}{among} count {count} ({name} {mode}, {count - mode:+d}): possible clone or "
                    f"mosaicism with a loss. Karyotype these cells to see whether the same chromosome "
                    f"is lost.",
                )
            )
    return flags


# Alerts that read a constitutional or mosaic finding into the counts.
CLONE_ALERTS = ("POSSIBLE_CLONE_GAIN", "POSSIBLE_CLONE_LOSS", "POSSIBLE_MOSAIC_NORMAL")
COUNT_ALERTS = ("ABNORMAL_MODE", "TIED_MODE", *CLONE_ALERTS)
# Findings about single cells off the case count, judged on reviewed cells while some counts are automatic.
OFF_COUNT_FINDINGS = (*CLONE_ALERTS, "EXTEND_COUNT", "CELLS_OFF_MODE")


def provisional(flags: Sequence[Flag], n_unreviewed: int, n_cells: int) -> list[Flag]:
    """`flags` as they stand while some of the counts are automatic and unreviewed: a caveat on the case
    count's alerts, and the automatic counts' findings about cells off the case count (clones, mosaicism,
    extending the count) set aside for one note; the case report judges those on the reviewed cells alone
    (`clone_flags` and `off_count_flags` with `of_reviewed`).

    Why: a cell miscounted by one moves the mode and makes clones. In simulated 20-cell cases of normal
    G-band cells the shipped model's unreviewed counts raise a count alert (ABNORMAL_MODE or TIED_MODE)
    in 7.4% of cases read by their median (17.4% by their mode); 12 of their 20 cells differ from the case
    count, and two of them share a gain in 96.5% of cases — as often as in cases where 10-30% of the cells
    carry a gain (97.9-98.4%), so on automatic counts these findings tell a mosaic from a normal patient no
    better than chance (BENCHMARKS.md, "Per case: the median of automatic counts" and "Mosaicism and
    automatic counts")."""
    if n_unreviewed <= 0:
        return list(flags)
    caveat = (
        f" (From automatic counts, {n_unreviewed} of {n_cells} not yet reviewed: a cell miscounted by one "
        f"can raise this alert alone. Review the cells before acting on it.)"
    )
    kept = [
        Flag(f.code, f.severity, f.message + caveat) if f.code in COUNT_ALERTS else f
        for f in flags
        if f.code not in OFF_COUNT_FINDINGS
    ]
    if len(kept) < len(flags):
        kept.append(
            Flag(
                "JUDGED_ON_REVIEWED_CELLS",
                "info",
                f"Clones, mosaicism and whether to extend the count are judged on reviewed cells only "
                f"({n_cells - n_unreviewed} of {n_cells} so far): on automatic counts, cells off the case "
                f"count by the same number turn up in nearly every normal case.",
            )
        )
    return kept


# An automatic count the model gives less than this chance of being exact (metrics/count_chance.py) is
# "unsure": with the session-37 model 10 of the 37 G-band validation cells below it were counted exactly,
# 79 of the other 163 (BENCHMARKS.md, first section; session 19's model: 10 of 67 and 66 of 133); 2 of the
# 12 DAPI cells below it, 16 of the other 25.
UNSURE_CHANCE = 0.2


def review_flags(
    n_cells: int,
    n_reviewed: int,
    n_low_confidence_cells: int,
    n_unreadable: int,
    n_unsteady_cells: int = 0,
    n_unsure_cells: int = 0,
) -> list[Flag]:
    """Flags about the review itself: automatic counts are never signed out unchecked. `n_unsteady_cells`:
    unreviewed cells counted differently in different orientations (`deepace case --views`, deepace/views.py);
    on the G-band validation cells counted in five, 33 of the 36 steady cells were counted exactly and 67 of
    the 164 unsteady ones (the session-37 model; BENCHMARKS.md, first section). `n_unsure_cells`:
    unreviewed cells whose count the model gives less than `UNSURE_CHANCE` of being exact."""
    flags: list[Flag] = []
    if n_unreadable:
        flags.append(
            Flag(
                "UNREADABLE_FILES",
                "warning",
                f"{n_unreadable} file{'s' if n_unreadable != 1 else ''} could not be read and "
                f"{'were' if n_unreadable != 1 else 'was'} not counted.",
            )
        )
    if n_cells and n_reviewed < n_cells:
        flags.append(
            Flag(
                "NOT_REVIEWED",
                "warning",
                f"{n_cells - n_reviewed} of {n_cells} automatic counts are not yet reviewed: "
                f"check every cell before sign-out.",
            )
        )
    if n_low_confidence_cells:
        flags.append(
            Flag(
                "LOW_CONFIDENCE",
                "info",
                f"{_cells(n_low_confidence_cells)} with low-confidence detections (orange boxes): "
                f"check those boxes first.",
            )
        )
    if n_unsteady_cells:
        flags.append(
            Flag(
                "UNSTEADY_COUNTS",
                "info",
                f"{_cells(n_unsteady_cells)} counted differently in different orientations (unsteady): "
                f"their counts are the less sure ones; check them first.",
            )
        )
    if n_unsure_cells:
        flags.append(
            Flag(
                "UNSURE_COUNTS",
                "info",
                f"{_cells(n_unsure_cells)} whose count the model gives less than a {UNSURE_CHANCE:.0%} "
                f"chance of being exact (on validation cells such counts were exact 27% of the time against "
                f"48% for the others on G-band, 17% against 64% on DAPI): check them first.",
            )
        )
    return flags


def sort_flags(flags: Sequence[Flag]) -> list[Flag]:
    """Most severe first, keeping the original order within a severity."""
    return sorted(flags, key=lambda f: -SEVERITIES.index(f.severity))


def magnification_flags(advice: dict[str, float]) -> list[Flag]:
    """A flag per stain whose chromosomes look far from the model's training size (deepace.magnification):
    such counts can be far off with no low-confidence box to show it."""
    return [
        Flag(
            "CHECK_MAGNIFICATION",
            "alert",
            f"The chromosomes in the {stain} images, as they are, look about {1 / factor:.1f}x the size of "
            f"the model's training images': counts may be far off. Recount with --magnification {factor:g}.",
        )
        for stain, factor in sorted(advice.items())
    ]


def _listed(items: list[str], listed: int) -> str:
    """The first `listed` items, comma-separated, and how many more there are."""
    more = f" and {len(items) - listed} more" if len(items) > listed else ""
    return ", ".join(items[:listed]) + more


def empty_image_flags(names: list[str], listed: int = 5) -> list[Flag]:
    """One flag for the cells in which the model found no chromosome (deepace/blank_boxes.py): a blank or
    black frame, a field with no metaphase, or a spread the model cannot see at all. They are left out of
    the case's counts, where a 0 would read as a cell off the case count."""
    if not names:
        return []
    one = len(names) == 1
    return [
        Flag(
            "NO_CHROMOSOMES_FOUND",
            "warning",
            f"No chromosome was found in {_cells(len(names))}: {_listed(sorted(names), listed)}. "
            f"{'It is' if one else 'They are'} left out of the case's counts. Check "
            f"{'it' if one else 'them'}: a blank frame or a field without a metaphase belongs out of the "
            f"case; a spread belongs in it, counted on the review page.",
        )
    ]


def other_stain_flags(names: list[str], listed: int = 5) -> list[Flag]:
    """One flag for the cells counted with a --stain they do not look like (CellResult.other_stain_look):
    read as the wrong stain, a spread is counted as nonsense (the DAPI example read as brightfield: 0)."""
    if not names:
        return []
    return [
        Flag(
            "WRONG_STAIN",
            "alert",
            f"{_cells(len(names))} counted with a --stain {'it does' if len(names) == 1 else 'they do'} not "
            f"look like (a dark background where a light one was expected): "
            f"{_listed(sorted(names), listed)}. Their counts are likely wrong: count the case again with "
            f"--stain auto.",
        )
    ]


def duplicate_image_flags(groups: list[list[str]], listed: int = 5) -> list[Flag]:
    """One flag for images that are copies of one another (the same bytes under other names): each copy
    counts the same cell again, towards the cells counted and the case's count."""
    if not groups:
        return []
    shown = _listed([" = ".join(g) for g in groups], listed)
    copies = sum(len(g) - 1 for g in groups)
    return [
        Flag(
            "DUPLICATE_IMAGES",
            "warning",
            f"{copies} image{'s are copies' if copies != 1 else ' is a copy'} of another cell's: {shown}. "
            f"Each copy counts the same cell again; remove the copies so that every cell counts once.",
        )
    ]


def mixed_settings_flags(settings: dict[str, tuple[float, int]], listed: int = 5) -> list[Flag]:
    """One flag when the cells of a case were counted with different --magnification or --views
    ({name: (magnification, views)}), e.g. a cell uploaded to a review app started with other options:
    their automatic counts are not alike, and the case's count mixes them."""
    groups: dict[tuple[float, int], list[str]] = {}
    for name, setting in settings.items():
        groups.setdefault(setting, []).append(name)
    if len(groups) < 2:
        return []
    parts = [
        f"--magnification {m:g} --views {v}: {_cells(len(names))} ({_listed(sorted(names), listed)})"
        for (m, v), names in sorted(groups.items())
    ]
    return [
        Flag(
            "MIXED_SETTINGS",
            "warning",
            f"The cells were counted with different settings: {'; '.join(parts)}. Count the case again "
            f"with one setting (deepace case) so that its automatic counts are alike.",
        )
    ]


def set_aside_review_flags(names: list[str], listed: int = 5) -> list[Flag]:
    """One flag for the cells whose image was replaced after it was reviewed (deepace/report/case.py): the
    review belonged to the old image, so it is set aside and the new image counts as unreviewed."""
    if not names:
        return []
    one = len(names) == 1
    return [
        Flag(
            "REVIEWS_SET_ASIDE",
            "warning",
            f"The image of {_cells(len(names))} changed after {'it was' if one else 'they were'} reviewed: "
            f"{_listed(sorted(names), listed)}. The old review{'' if one else 's'} no longer appl"
            f"{'ies' if one else 'y'} and {'is' if one else 'are'} set aside (dropped when the corrections "
            f"are next saved); the new image's count is automatic: review {'it' if one else 'them'} again.",
        )
    ]


def noisy_image_flags(noise: dict[str, float], listed: int = 5) -> list[Flag]:
    """One flag for the cells whose images were far noisier than the training images and denoised before
    counting ({name: noise σ}; deepace/data/noise.py): denoising gives back most of what noise costs on
    G-band spreads, less on DAPI ones (BENCHMARKS.md, "Session 31: noisy images")."""
    if not noise:
        return []
    names = sorted(noise)
    shown = _listed([f"{n} (σ {noise[n]:.1f})" for n in names], listed)
    return [
        Flag(
            "NOISY_IMAGES",
            "info",
            f"{_cells(len(names))} {'was' if len(names) == 1 else 'were'} noisy and smoothed before counting "
            f"(pixel noise in grey levels): {shown}. Noise still costs some counts, most on DAPI "
            f"images; a longer exposure or lower camera gain gives cleaner images.",
        )
    ]


def repeated_pixel_flags(factors: dict[str, int], listed: int = 5) -> list[Flag]:
    """One flag for the cells whose images were enlarged k times by repeating pixels ({name: k};
    deepace.magnification.pixel_repetition): the model miscounts such blocky images badly, whatever
    --magnification is given."""
    if not factors:
        return []
    names = sorted(factors)
    shown = _listed([f"{n} ({factors[n]}x)" for n in names], listed)
    return [
        Flag(
            "BLOCKY_IMAGES",
            "alert",
            f"{_cells(len(names))} {'looks' if len(names) == 1 else 'look'} enlarged by repeating pixels "
            f"(nearest-neighbour zoom): {shown}. "
            f"Counts on such images can be far off; count the camera's original images.",
        )
    ]
