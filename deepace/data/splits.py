"""Deterministic, stratified, group-aware train/validation splits."""

from __future__ import annotations

import hashlib
import math
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable, Sequence
from pathlib import Path

from deepace.data.records import ImageRecord

Stratify = str | Callable[[ImageRecord], Hashable] | None


def parent_group(record: ImageRecord) -> str:
    """Group key 'parent folder name' (one M-FISH slide per folder)."""
    return record.path.parent.name


def _stratum_fn(stratify: Stratify) -> Callable[[ImageRecord], Hashable]:
    if stratify is None:
        return lambda r: None
    if isinstance(stratify, str):
        name = stratify
        return lambda r: getattr(r, name)
    return stratify


def _rank(seed: int, key: str) -> str:
    """Pseudo-random but reproducible order key: stable across runs, platforms and added records."""
    return hashlib.sha256(f"{seed}\x00{key}".encode()).hexdigest()


def _quotas(sizes: dict[str, int], n_units: dict[str, int], fraction: float) -> dict[str, int]:
    """Validation images per stratum: about `fraction` of each, summing to the overall target, at least
    one unit's worth in every stratum that has two or more units."""
    total = sum(sizes.values())
    target = round(fraction * total)
    raw = {s: fraction * n for s, n in sizes.items()}
    quota = {s: math.floor(v) for s, v in raw.items()}
    for s in quota:
        if n_units[s] >= 2 and quota[s] == 0 and fraction > 0:
            quota[s] = 1
    left = target - sum(quota.values())
    for s in sorted(raw, key=lambda s: (-(raw[s] - math.floor(raw[s])), s)):
        if left <= 0:
            break
        if raw[s] - quota[s] > 0:
            quota[s] += 1
            left -= 1
    return quota


def split_records(
    records: Sequence[ImageRecord],
    val_fraction: float = 0.1,
    seed: int = 0,
    stratify: Stratify = "expected_count",
    group: Callable[[ImageRecord], Hashable] | None = None,
    together: Iterable[Iterable[Path]] = (),
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """(train, val), each sorted by path.

    About `val_fraction` of the images go to val, within every stratum (`stratify`: a record attribute
    name, a callable, or None), so every stratum with two or more units (e.g. cells with 45 or 47
    chromosomes) has at least one in val and one in train. With `group` (record -> key), all images of one
    group land on the same side; a group's stratum is its most common member stratum. `together` names sets
    of paths that must also land on one side (e.g. byte-identical copies of an image under other names,
    which would otherwise validate the model on a cell it trained on); their units are merged. The result
    depends only on the set of paths, their strata and groups, and `seed`: not on the input order.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), not {val_fraction}")
    ordered = sorted(records, key=lambda r: str(r.path))
    stratum_of = _stratum_fn(stratify)
    relative = _relative_paths(ordered)

    units: dict[str, list[ImageRecord]] = defaultdict(list)
    for r, rel in zip(ordered, relative, strict=True):
        key = repr(group(r)) if group is not None else rel
        units[key].append(r)
    units = _merge_units(units, together)

    by_stratum: dict[str, list[str]] = defaultdict(list)
    for key, members in units.items():
        counts = Counter(repr(stratum_of(r)) for r in members)
        stratum = min(counts, key=lambda s: (-counts[s], s))
        by_stratum[stratum].append(key)

    sizes = {s: sum(len(units[k]) for k in keys) for s, keys in by_stratum.items()}
    n_units = {s: len(keys) for s, keys in by_stratum.items()}
    quotas = _quotas(sizes, n_units, val_fraction)

    val_keys: set[str] = set()
    for stratum in sorted(by_stratum):
        keys = sorted(by_stratum[stratum], key=lambda k: (_rank(seed, k), k))
        taken = 0
        for k in keys[: max(len(keys) - 1, 0)]:  # keep one unit for train
            if taken >= quotas[stratum]:
                break
            val_keys.add(k)
            taken += len(units[k])

    train = [r for k, members in units.items() if k not in val_keys for r in members]
    val = [r for k, members in units.items() if k in val_keys for r in members]
    return sorted(train, key=lambda r: str(r.path)), sorted(val, key=lambda r: str(r.path))


def _merge_units(
    units: dict[str, list[ImageRecord]], together: Iterable[Iterable[Path]]
) -> dict[str, list[ImageRecord]]:
    """Units joined wherever a `together` set has members in more than one; a joined unit keeps the least
    of its keys, so the split stays independent of input order."""
    unit_of = {str(r.path): key for key, members in units.items() for r in members}
    parent = {key: key for key in units}

    def root(key: str) -> str:
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for paths in together:
        keys = sorted({root(unit_of[str(p)]) for p in paths if str(p) in unit_of})
        for key in keys[1:]:
            parent[key] = keys[0]
    merged: dict[str, list[ImageRecord]] = defaultdict(list)
    for key in sorted(units):
        merged[root(key)].extend(units[key])
    return merged


def _relative_paths(records: Sequence[ImageRecord]) -> list[str]:
    """Each path relative to the records' common folder, '/'-separated: the split must not depend on how
    the data folder was spelled (`../shared/data` or `/work/shared/data`) or where it lies."""
    if not records:
        return []
    absolute = [os.path.abspath(r.path) for r in records]
    root = os.path.commonpath(absolute) if len(absolute) > 1 else os.path.dirname(absolute[0])
    if root in absolute:  # one file only, or a path that is also a folder prefix
        root = os.path.dirname(root)
    return [os.path.relpath(p, root).replace(os.sep, "/") for p in absolute]


def split_by_list(
    records: Sequence[ImageRecord], val_list: Sequence[str]
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """(train, val) with val the records named in `val_list`: paths relative to the data folder, e.g.
    'images/104062.jpg' (a recorded split such as benchmarks/splits/taichung_val.txt). An entry matches the
    record whose path ends with it; an entry matching no record, or several, is an error."""
    entries = [e.strip().replace("\\", "/") for e in val_list if e.strip()]
    paths = {id(r): Path(r.path).as_posix() for r in records}
    val_ids: set[int] = set()
    for entry in entries:
        hits = [r for r in records if paths[id(r)] == entry or paths[id(r)].endswith("/" + entry)]
        if len(hits) != 1:
            raise ValueError(f"validation list entry {entry!r} matches {len(hits)} images, not one")
        val_ids.add(id(hits[0]))
    train = [r for r in records if id(r) not in val_ids]
    val = [r for r in records if id(r) in val_ids]
    return sorted(train, key=lambda r: str(r.path)), sorted(val, key=lambda r: str(r.path))
