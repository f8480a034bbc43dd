"""Chromosome boxes from expert label images (ADIR M-FISH style), and the chromosome count of a karyotype.

A label image holds one value per pixel: 0 background, 1-22 autosomes, 23 X, 24 Y and 255 where two
chromosomes overlap. Turning it into one box per chromosome:

1. Parts: the 8-connected components of each class.
2. Crossings: an overlap region (255) belongs to both chromosomes that meet there. The two pieces of one
   class touching an overlap region are the halves of one chromosome cut by the crossing. With three or
   four pieces of one class (homologs crossing, or a bent chromosome), pieces are paired across the
   crossing by direction, and a piece left over joins a pair when together they are no larger than one
   chromosome of that class should be.
3. Specks (a few pixels) are dropped, or merged into the chromosome they touch; fragments (a part much
   smaller than its class should be, e.g. a misclassified chunk) sharing a long border with another
   chromosome are merged into it.
4. Touching homologs share a label value and form one object. An object is cut in two when it is much
   larger than its class should be in this cell: the cell's scale is the median of area / relative
   length (ISCN relative lengths of the human chromosomes), and each object gets a size ratio (1 = as
   expected). A class with a single object asks less (its homolog is likely merged into it), and an object
   that falls apart cleanly (at a thin separating line, or at a neck under erosion) asks less than one
   that does not (then it is cut by 2-means along its major axis).

The karyotype count is never used to force the result; it is only what the result is measured against.
On the 136 ADIR M-FISH images the box count equals the karyotype count for 132 (97%); plain connected
components of each class give 38 (28%), and joining pieces through crossings alone 86 (63%).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from deepace.data.records import AnnotationError, ImageRecord

OVERLAP = 255
CLASS_NAMES: dict[int, str] = {**{i: str(i) for i in range(1, 23)}, 23: "X", 24: "Y"}

# Relative length of each chromosome (per cent of the haploid autosomal length, ISCN).
RELATIVE_LENGTH: dict[int, float] = {
    1: 8.44, 2: 8.02, 3: 6.83, 4: 6.30, 5: 6.08, 6: 5.90, 7: 5.36, 8: 4.93, 9: 4.80, 10: 4.59,
    11: 4.61, 12: 4.66, 13: 3.74, 14: 3.56, 15: 3.46, 16: 3.36, 17: 3.25, 18: 2.93, 19: 2.67,
    20: 2.56, 21: 1.90, 22: 2.04, 23: 5.12, 24: 2.15,
}  # fmt: skip

_S8 = np.ones((3, 3), dtype=bool)
_S4 = ndi.generate_binary_structure(2, 1)

Crop = tuple[slice, slice]


@dataclass(frozen=True)
class MaskRules:
    """Tuning of `boxes_from_label_image` (defaults measured on the ADIR M-FISH set).

    Size ratios are an object's area over the area its class should have in the cell (1 = as expected).
    """

    min_area: int = 20  # parts (joined through crossings) under this many pixels are specks
    fragment_ratio: float = 0.35  # smaller objects that share a long border with another are merged
    fragment_contact: float = 0.2  # "long border": this fraction of the fragment's outline
    pair_dot: float = -0.3  # pieces at a crossing pair up when their directions' cosine is below this
    single_ratio: float = 1.6  # split a class's only object at this ratio ...
    single_ratio_clean: float = 1.45  # ... or at this one when it falls apart cleanly
    any_ratio: float = 3.5  # split any object at this ratio ...
    any_ratio_clean: float = 2.0  # ... or at this one when it falls apart cleanly
    sex_single_ratio: float = 2.0  # a lone X (male cell) or Y (variable length) needs this ratio
    clean_fraction: float = 0.35  # a clean cut leaves the smaller piece at least this share ...
    clean_erosion: int = 5  # ... after at most this many erosions


# --------------------------------------------------------------------------------------------- karyotype


def parse_karyotype_count(karyotype: str | None) -> int | None:
    """The chromosome count of an ISCN karyotype (`46,XY` -> 46, `45,XX,-13` -> 45, `47,XXY` -> 47).

    None for anything that does not start with a count followed by the sex chromosomes."""
    if not isinstance(karyotype, str):
        return None
    match = re.match(r"\s*(\d{1,3})\s*,\s*[XY]", karyotype, flags=re.IGNORECASE)
    if match is None:
        return None
    count = int(match.group(1))
    return count if 1 <= count <= 150 else None


# one item of an ISCN karyotype: sex chromosomes, a gain or loss (+21, -13), or a rearrangement (t(4;9))
_ISCN_TOKEN = re.compile(r"[+\-?]*(?:[XY]+|\d{1,2}|[A-Za-z]{1,4}\([^()]*\)(?:\([^()]*\))?)[+\-?]?")


def clean_karyotype(text: str) -> str | None:
    """The ISCN karyotype at the start of `text` with trailing junk cut off (`47,XX,+r(9)acare` ->
    `47,XX,+r(9)`), None when `text` does not start with one."""
    text = re.sub(r"[\x00-\x1f]", " ", text).strip()
    head = re.match(r"(\d{1,3})\s*,\s*", text)
    if head is None:
        return None
    tokens = [head.group(1)]
    rest = text[head.end() :]
    while rest:
        token = _ISCN_TOKEN.match(rest)
        if token is None:
            break
        tokens.append(token.group(0))
        rest = rest[token.end() :]
        sep = re.match(r"\s*,\s*", rest)
        if sep is None:
            break
        rest = rest[sep.end() :]
    karyotype = ",".join(tokens)
    return karyotype if parse_karyotype_count(karyotype) is not None else None


def read_case_info(path: str | Path) -> str | None:
    """The karyotype in a slide's 'Case Info' file (its first non-empty line, trailing junk cut off),
    None when the file is missing or holds no karyotype."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.strip("\x00 \t"):
            return clean_karyotype(line)
    return None


# ----------------------------------------------------------------------------------------------- helpers


def _grow(crop: Crop, shape: tuple[int, ...], margin: int) -> Crop:
    y, x = crop
    return (
        slice(max(y.start - margin, 0), min(y.stop + margin, shape[0])),
        slice(max(x.start - margin, 0), min(x.stop + margin, shape[1])),
    )


def _union_crop(a: Crop, b: Crop) -> Crop:
    return (
        slice(min(a[0].start, b[0].start), max(a[0].stop, b[0].stop)),
        slice(min(a[1].start, b[1].start), max(a[1].stop, b[1].stop)),
    )


def _paste(mask: np.ndarray, crop: Crop, into: Crop) -> np.ndarray:
    """`mask` (covering `crop`) placed in a boolean array covering `into` (which holds `crop`)."""
    out = np.zeros((into[0].stop - into[0].start, into[1].stop - into[1].start), dtype=bool)
    y0, x0 = crop[0].start - into[0].start, crop[1].start - into[1].start
    out[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]] = mask
    return out


def _ring(mask: np.ndarray) -> np.ndarray:
    return ndi.binary_dilation(mask, _S8) & ~mask


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = np.arange(n)

    def find(self, a: int) -> int:
        root = a
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[a] != root:
            self.parent[a], a = root, self.parent[a]
        return int(root)

    def union(self, a: int, b: int) -> None:
        self.parent[self.find(a)] = self.find(b)


# ------------------------------------------------------------------------------------------------- parts


@dataclass
class _Parts:
    """Connected parts of each class: a part id image (0 = none), per-part class, area and crop."""

    ids: np.ndarray
    cls: np.ndarray
    area: np.ndarray
    crops: list[Crop]

    @property
    def n(self) -> int:
        return len(self.cls) - 1

    def touching(self, mask: np.ndarray, crop: Crop) -> np.ndarray:
        """Part ids on the one-pixel ring around `mask` (covering `crop`, grown by 1 beforehand)."""
        found = np.unique(self.ids[crop][_ring(mask)])
        return found[found > 0]


def _diagonal_links(labels: np.ndarray, ids4: np.ndarray) -> np.ndarray:
    """Pairs of 4-connected components of one class touching diagonally, except across the corner of an
    overlap region (where two same-class chromosomes crossing each other meet)."""
    links = []
    h, w = labels.shape
    for dx in (1, -1):
        xa, xb = (slice(0, w - 1), slice(1, w)) if dx == 1 else (slice(1, w), slice(0, w - 1))
        a, b = ids4[:-1, xa], ids4[1:, xb]
        side1, side2 = labels[:-1, xb], labels[1:, xa]
        ok = (a > 0) & (b > 0) & (a != b) & (labels[:-1, xa] == labels[1:, xb])
        ok &= (side1 != OVERLAP) & (side2 != OVERLAP)
        links.append(np.stack([a[ok], b[ok]], axis=1))
    return np.concatenate(links)


def _label_parts(labels: np.ndarray) -> _Parts:
    """8-connected parts of each class, but not joined across an overlap's corner."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    ids4 = np.zeros(labels.shape, dtype=np.int32)
    classes4 = [0]
    for value in np.unique(labels):
        if int(value) in CLASS_NAMES:
            lab, n = ndi.label(labels == value)
            ids4[lab > 0] = lab[lab > 0] + len(classes4) - 1
            classes4 += [int(value)] * n
    links = _diagonal_links(labels, ids4)
    n4 = len(classes4)
    graph = coo_matrix((np.ones(len(links)), (links[:, 0], links[:, 1])), shape=(n4, n4))
    _, merged = connected_components(graph, directed=False)
    # renumber so that the background stays 0 and parts are 1..n
    _, renumber = np.unique(merged[1:], return_inverse=True)
    lut = np.concatenate([[0], renumber + 1]).astype(np.int32)
    ids = lut[ids4]
    n = int(lut.max())
    classes = np.zeros(n + 1, dtype=np.int64)
    classes[lut[1:]] = classes4[1:]
    crops: list[Crop] = [(slice(0, 0), slice(0, 0))] + list(ndi.find_objects(ids, max_label=n))
    area = np.bincount(ids.ravel(), minlength=n + 1)
    area[0] = 0
    return _Parts(ids=ids, cls=classes, area=area, crops=crops)


def _part_scale(parts: _Parts, min_area: int) -> float:
    """Pixels per unit of relative length in this cell from the parts (a rough first estimate)."""
    real = np.flatnonzero(parts.area >= min_area)
    if len(real) == 0:
        return 1.0
    rel = np.array([RELATIVE_LENGTH[c] for c in parts.cls[real]])
    return float(np.median(parts.area[real] / rel))


# ----------------------------------------------------------------------------------------------- crossings


@dataclass
class _Region:
    """One overlap region: its mask over `crop` (its bounding box grown by one) and the parts it touches."""

    mask: np.ndarray
    crop: Crop
    touching: np.ndarray


def _overlap_regions(labels: np.ndarray, parts: _Parts) -> list[_Region]:
    ovl, _ = ndi.label(labels == OVERLAP, _S8)
    regions = []
    for i, box in enumerate(ndi.find_objects(ovl)):
        crop = _grow(box, labels.shape, 1)
        mask = ovl[crop] == i + 1
        regions.append(_Region(mask=mask, crop=crop, touching=parts.touching(mask, crop)))
    return regions


def _direction(yx: np.ndarray, center: np.ndarray) -> np.ndarray:
    d = yx.mean(axis=0) - center if len(yx) else np.zeros(2)
    return d / (np.linalg.norm(d) + 1e-9)


def _pair_by_direction(dirs: dict[int, np.ndarray], max_dot: float) -> list[tuple[int, int]]:
    """Greedy pairs of pieces pointing most nearly opposite ways (a chromosome runs straight through)."""
    pairs: list[tuple[int, int]] = []
    left = list(dirs)
    while len(left) >= 2:
        candidates = [(a, b) for i, a in enumerate(left) for b in left[i + 1 :]]
        a, b = min(candidates, key=lambda ab: float(dirs[ab[0]] @ dirs[ab[1]]))
        if float(dirs[a] @ dirs[b]) > max_dot:
            break
        pairs.append((a, b))
        left = [p for p in left if p not in (a, b)]
    return pairs


def _link_crossing_pieces(
    parts: _Parts, region: _Region, pieces: list[int], uf: _UnionFind, limit: float, max_dot: float
) -> None:
    wide = _grow(region.crop, parts.ids.shape, 10)
    ovl = _paste(region.mask, region.crop, wide)
    near = ndi.distance_transform_edt(~ovl) <= 10
    center = np.argwhere(ovl).mean(axis=0)
    ids = parts.ids[wide]
    dirs = {p: _direction(np.argwhere((ids == p) & near), center) for p in pieces}
    pairs = _pair_by_direction(dirs, max_dot)
    for a, b in pairs:
        uf.union(a, b)
    paired = {p for pair in pairs for p in pair}
    for p in pieces:
        if p in paired or not pairs:
            continue
        sizes = [parts.area[list(pair)].sum() for pair in pairs]
        smallest = int(np.argmin(sizes))
        if sizes[smallest] + parts.area[p] < limit:  # the bent end of the same chromosome
            uf.union(p, pairs[smallest][0])


def _link_through_overlaps(parts: _Parts, regions: list[_Region], uf: _UnionFind, rules: MaskRules) -> None:
    scale = _part_scale(parts, rules.min_area)
    for region in regions:
        touching = region.touching
        for value in np.unique(parts.cls[touching]):
            pieces = [int(p) for p in touching[parts.cls[touching] == value]]
            if len(pieces) > 2:  # pair the real pieces; specks are absorbed later
                pieces = [p for p in pieces if parts.area[p] >= rules.min_area]
            if len(pieces) == 2:
                uf.union(*pieces)
            elif len(pieces) > 2:
                limit = rules.single_ratio * scale * RELATIVE_LENGTH[int(value)]
                _link_crossing_pieces(parts, region, pieces, uf, limit, rules.pair_dot)


def _absorb_specks(parts: _Parts, uf: _UnionFind, min_area: int) -> np.ndarray:
    """Which parts are live: those whose group (parts joined through crossings) has `min_area` pixels.
    A speck touching a live part is merged into the largest one it touches; the others are dropped."""
    roots = np.array([uf.find(p) for p in range(parts.n + 1)])
    group_area = np.bincount(roots, weights=parts.area, minlength=parts.n + 1)
    live = group_area[roots] >= min_area
    live[0] = False
    for p in np.flatnonzero(~live)[1:]:
        crop = _grow(parts.crops[p], parts.ids.shape, 1)
        touching = parts.touching(parts.ids[crop] == p, crop)
        touching = touching[live[touching]]
        if len(touching):
            uf.union(int(p), int(touching[np.argmax(parts.area[touching])]))
    return live


# ----------------------------------------------------------------------------------------------- objects


@dataclass
class _Object:
    """One chromosome over `crop`: all its pixels (`mask`, with the overlaps it lies in), its own labelled
    pixels (`own`), its class and its area (own pixels plus half of its overlap pixels)."""

    mask: np.ndarray
    own: np.ndarray
    crop: Crop
    cls: int
    area: float

    def box(self) -> np.ndarray:
        ys, xs = np.nonzero(self.mask)
        y0, x0 = self.crop[0].start, self.crop[1].start
        return np.array([xs.min() + x0, ys.min() + y0, xs.max() + x0 + 1, ys.max() + y0 + 1], np.float32)


def _group_objects(parts: _Parts, regions: list[_Region], uf: _UnionFind, live: np.ndarray) -> list[_Object]:
    groups: dict[int, list[int]] = {}
    for p in range(1, parts.n + 1):
        groups.setdefault(uf.find(p), []).append(p)
    part_regions: dict[int, list[int]] = {}
    for r, region in enumerate(regions):
        for p in region.touching:
            part_regions.setdefault(int(p), []).append(r)
    objects = []
    for members in groups.values():
        if not live[members].any():
            continue
        touched = sorted({r for p in members if live[p] for r in part_regions.get(p, [])})
        crop = parts.crops[members[0]]
        for c in [parts.crops[p] for p in members] + [regions[r].crop for r in touched]:
            crop = _union_crop(crop, c)
        own = np.isin(parts.ids[crop], members)
        mask = own.copy()
        overlap_area = 0
        for r in touched:
            mask |= _paste(regions[r].mask, regions[r].crop, crop)
            overlap_area += int(regions[r].mask.sum())
        main = max(members, key=lambda p: parts.area[p])
        area = float(parts.area[members].sum()) + 0.5 * overlap_area
        objects.append(_Object(mask=mask, own=own, crop=crop, cls=int(parts.cls[main]), area=area))
    return objects


def _size_ratios(objects: list[_Object]) -> np.ndarray:
    """Each object's area over the area its class should have in this cell (1 = as expected)."""
    rel = np.array([RELATIVE_LENGTH[o.cls] for o in objects])
    area = np.array([o.area for o in objects])
    return area / (float(np.median(area / rel)) * rel)


def _merge(big: _Object, small: _Object) -> _Object:
    crop = _union_crop(big.crop, small.crop)
    return _Object(
        mask=_paste(big.mask, big.crop, crop) | _paste(small.mask, small.crop, crop),
        own=_paste(big.own, big.crop, crop) | _paste(small.own, small.crop, crop),
        crop=crop,
        cls=big.cls,
        area=big.area + small.area,
    )


def _absorb_fragments(objects: list[_Object], shape: tuple[int, ...], rules: MaskRules) -> list[_Object]:
    """Objects much smaller than their class should be (misclassified chunks, translocated pieces) that
    share a long border with another object are merged into it. A small chromosome that merely lies
    against another one (a short contact) stays."""
    if len(objects) < 3:
        return objects
    ratios = _size_ratios(objects)
    index = np.zeros(shape, dtype=np.int32)
    for i in np.argsort(-ratios):  # fragments painted last, so they keep their own pixels
        index[objects[i].crop][objects[i].mask] = i + 1
    merged_into = np.arange(len(objects))
    for i in np.argsort(ratios):
        if ratios[i] >= rules.fragment_ratio:
            break
        crop = _grow(objects[i].crop, shape, 1)
        ring = _ring(_paste(objects[i].mask, objects[i].crop, crop))
        around = index[crop][ring]
        contact = np.bincount(around[(around > 0) & (around != i + 1)])
        if len(contact) == 0 or contact.max() < rules.fragment_contact * ring.sum():
            continue
        target = int(contact.argmax()) - 1
        while merged_into[target] != target:
            target = merged_into[target]
        merged_into[i] = target
        objects[target] = _merge(objects[target], objects[i])
    return [o for i, o in enumerate(objects) if merged_into[i] == i]


# ------------------------------------------------------------------------------ splitting touching homologs


def _largest_two(lab: np.ndarray, n: int, min_fraction: float) -> list[int]:
    """The (at most two) largest components holding at least `min_fraction` of the labelled pixels."""
    sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    return [int(i) + 1 for i in np.argsort(-sizes)[:2] if sizes[i] >= min_fraction * sizes.sum()]


def _cut_seeds(mask: np.ndarray, min_fraction: float, max_erosion: int) -> np.ndarray | None:
    """Two seeds where `mask` falls apart: at a thin line (4-connectivity) or at a neck (erosion), each
    piece holding at least `min_fraction` of the pixels; None when it does not."""
    lab, n = ndi.label(mask, _S4)
    keep = _largest_two(lab, n, min_fraction)
    eroded = mask
    for _ in range(max_erosion):
        if len(keep) == 2:
            return np.where(np.isin(lab, keep), lab, 0)
        eroded = ndi.binary_erosion(eroded, _S4)
        if not eroded.any():
            return None
        lab, n = ndi.label(eroded, _S8)
        keep = _largest_two(lab, n, min_fraction)
    return np.where(np.isin(lab, keep), lab, 0) if len(keep) == 2 else None


def _split_kmeans(mask: np.ndarray, side_by_side: bool = False, iterations: int = 10) -> list[np.ndarray]:
    """Two halves by 2-means on the pixel coordinates, started at the two ends of the major axis (end to
    end), or of the minor axis when the object is twice as thick as a chromosome (side by side)."""
    yx = np.argwhere(mask).astype(np.float64)
    if len(yx) < 2:
        return [mask]
    mean = yx.mean(axis=0)
    axes = np.linalg.svd(yx - mean, full_matrices=False)[2]
    proj = (yx - mean) @ axes[1 if side_by_side else 0]
    centers = (np.stack([yx[np.argmin(proj)], yx[np.argmax(proj)]]) + mean) / 2
    for _ in range(iterations):
        assign = np.argmin(((yx[:, None, :] - centers[None]) ** 2).sum(-1), axis=1)
        if assign.min() == assign.max():
            return [mask]
        centers = np.stack([yx[assign == k].mean(axis=0) for k in (0, 1)])
    pieces = []
    for k in (0, 1):
        piece = np.zeros_like(mask)
        piece[tuple(yx[assign == k].astype(int).T)] = True
        pieces.append(piece)
    return pieces


def _split_mask(mask: np.ndarray, side_by_side: bool = False) -> list[np.ndarray]:
    """Cut a mask holding two touching chromosomes in two: at a thin line or a neck when there is one
    (the pieces grown back by a distance-transform watershed), else by 2-means."""
    from skimage.segmentation import watershed

    seeds = _cut_seeds(mask, min_fraction=0.2, max_erosion=6)
    if seeds is None:
        return _split_kmeans(mask, side_by_side)
    grown = watershed(-ndi.distance_transform_edt(mask), markers=seeds, mask=mask)
    return [grown == v for v in np.unique(grown[grown > 0])]


def _thickness(mask: np.ndarray) -> float:
    """Twice the largest distance to the background: the width at the thickest point."""
    return 2.0 * float(ndi.distance_transform_edt(np.pad(mask, 1)).max())


def _split_object(obj: _Object, typical_thickness: float) -> list[_Object]:
    pieces = _split_mask(obj.own, side_by_side=_thickness(obj.own) > 1.6 * typical_thickness)
    if len(pieces) < 2:
        return [obj]
    owner = np.zeros(obj.own.shape, dtype=np.int32)
    for k, piece in enumerate(pieces, start=1):
        owner[piece] = k
    _, (iy, ix) = ndi.distance_transform_edt(owner == 0, return_indices=True)
    nearest = owner[iy, ix]  # overlap pixels go to the nearest piece
    total = max(int(obj.own.sum()), 1)
    return [
        _Object(
            mask=obj.mask & (nearest == k),
            own=piece,
            crop=obj.crop,
            cls=obj.cls,
            area=obj.area * float(piece.sum()) / total,
        )
        for k, piece in enumerate(pieces, start=1)
    ]


def _needs_split(obj: _Object, ratio: float, alone: bool, rules: MaskRules) -> bool:
    if ratio >= rules.any_ratio:
        return True
    if alone and obj.cls >= 23:  # one X is normal (male cell), and the Y varies much in length
        return ratio >= rules.sex_single_ratio
    if alone and ratio >= rules.single_ratio:
        return True
    if ratio < (rules.single_ratio_clean if alone else rules.any_ratio_clean):
        return False
    return _cut_seeds(obj.own, rules.clean_fraction, rules.clean_erosion) is not None


def _split_touching_homologs(objects: list[_Object], rules: MaskRules) -> list[_Object]:
    if len(objects) < 3:
        return objects
    ratios = _size_ratios(objects)
    per_class = np.bincount([o.cls for o in objects], minlength=25)
    typical_thickness: float | None = None
    out: list[_Object] = []
    for obj, ratio in zip(objects, ratios, strict=True):
        if _needs_split(obj, float(ratio), per_class[obj.cls] == 1, rules):
            if typical_thickness is None:
                typical_thickness = float(np.median([_thickness(o.own) for o in objects]))
            out += _split_object(obj, typical_thickness)
        else:
            out.append(obj)
    return out


# ------------------------------------------------------------------------------------------------- boxes


def boxes_from_label_image(
    labels: np.ndarray, rules: MaskRules | None = None
) -> tuple[np.ndarray, list[str]]:
    """One box per chromosome of a label image: (N, 4) float32 x1, y1, x2, y2 in pixel edges (x2, y2
    exclusive), sorted top to bottom, and the class name of each ("1".."22", "X", "Y")."""
    rules = rules or MaskRules()
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise AnnotationError(f"a label image must be 2-D, got shape {labels.shape}")
    parts = _label_parts(labels)
    uf = _UnionFind(parts.n + 1)
    regions = _overlap_regions(labels, parts)
    _link_through_overlaps(parts, regions, uf, rules)
    live = _absorb_specks(parts, uf, rules.min_area)
    objects = _group_objects(parts, regions, uf, live)
    objects = _absorb_fragments(objects, labels.shape, rules)
    objects = _split_touching_homologs(objects, rules)
    if not objects:
        return np.zeros((0, 4), np.float32), []
    boxes = np.stack([o.box() for o in objects])
    order = np.lexsort((boxes[:, 0], boxes[:, 1]))
    return boxes[order], [CLASS_NAMES[objects[i].cls] for i in order]


# ------------------------------------------------------------------------------------------------ folders


def read_label_image(path: str | Path) -> np.ndarray:
    """An 8-bit label image (TIFF, PNG); LZW TIFFs are read with Pillow (tifffile needs imagecodecs)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im)
    except Exception as pil_error:  # Pillow failed: try tifffile before giving up
        try:
            import tifffile

            return np.asarray(tifffile.imread(path))
        except Exception:
            raise AnnotationError(f"{path}: cannot read label image ({pil_error})") from pil_error


def _image_size(path: Path) -> tuple[int, int] | None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except Exception:  # a missing or broken image just has no size
        return None


def _image_for_labels(label_path: Path) -> Path:
    """The DAPI image beside a label image: <name>K.tif -> <name>D.tif."""
    image = label_path.with_name(label_path.stem[:-1] + "D" + label_path.suffix)
    if not image.exists():
        raise AnnotationError(f"{label_path}: no image {image.name} beside it")
    return image


def import_mask_folder(root: str | Path, rules: MaskRules | None = None) -> list[ImageRecord]:
    """Every *K.tif label image under `root` as an ImageRecord of its *D.tif image: boxes and class
    names from `boxes_from_label_image`, karyotype and expected_count from the slide's 'Case Info'."""
    root = Path(root)
    if not root.is_dir():
        raise AnnotationError(f"{root}: not a folder")
    label_paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".tif", ".tiff"))
    label_paths = [p for p in label_paths if p.stem.endswith("K")]
    records = []
    for label_path in label_paths:
        image = _image_for_labels(label_path)
        labels = read_label_image(label_path)
        boxes, names = boxes_from_label_image(labels, rules)
        size = _image_size(image) or (labels.shape[1], labels.shape[0])
        karyotype = read_case_info(label_path.parent / "Case Info")
        records.append(
            ImageRecord(
                path=image,
                boxes=boxes,
                labels=names,
                width=size[0],
                height=size[1],
                expected_count=parse_karyotype_count(karyotype),
                karyotype=karyotype,
            )
        )
    return records
