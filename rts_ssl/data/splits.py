"""Train/val/test splits grouped by location and region, reproducible by seed.

Whole groups move between splits, so the same slump seen on several dates (same place)
never sits on both sides. Leave-one-region-out holds out a region as the test set.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd

SPLIT_GROUPS = ("place", "location_id", "region")
FOLD = "test_regions"  # a fold: the held-out regions; cells of a seed over folds are averaged


def fold_key(regions: Sequence[str] | None) -> str:
    """A fold's held-out regions as one value of the results' ``test_regions`` column."""
    return ",".join(regions or [])


def grouped_split(
    groups: pd.Series, fractions: dict[str, float], seed: int = 0, rest: str = "train"
) -> pd.Series:
    """Assign whole groups to the named splits until each holds ~its fraction of rows.

    Every split with a positive fraction gets at least one group while there are groups to
    spare for ``rest``.
    """
    counts = groups.value_counts().sort_index()
    order = np.random.default_rng(seed).permutation(len(counts))
    names = [name for name, fraction in fractions.items() if fraction > 0]
    target = {name: fractions[name] * len(groups) for name in names}
    filled = dict.fromkeys(names, 0)
    assignment: dict[object, str] = {}
    for position in order:
        group, size = counts.index[position], int(counts.iloc[position])
        open_splits = [n for n in names if filled[n] == 0 or filled[n] + size / 2 <= target[n]]
        spare = len(counts) - len(assignment) > 1
        if open_splits and spare:
            name = min(open_splits, key=lambda n: filled[n] / max(target[n], 1e-9))
            filled[name] += size
            assignment[group] = name
        else:
            assignment[group] = rest
    return groups.map(assignment).rename("split")


def assign_splits(
    tiles: pd.DataFrame,
    test_regions: Sequence[str] | None = None,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    group: str = "place",
    seed: int = 0,
) -> pd.Series:
    """``train``/``val``/``test`` per tile.

    With ``test_regions`` the test set is exactly those regions (held out); val is drawn by
    group from the rest. Without, both are drawn by group from all tiles. ``group`` is
    ``place`` (all dates of a place together), ``location_id`` (its ~1 km blocks: for data
    of few places) or ``region``.
    """
    if group not in SPLIT_GROUPS:
        raise ValueError(f"unknown split group {group!r}; choose one of {', '.join(SPLIT_GROUPS)}")
    if test_regions:
        unknown = set(test_regions) - set(tiles["region"])
        if unknown:
            raise ValueError(f"unknown test region(s) {sorted(unknown)}; the data's regions "
                             f"are {sorted(tiles['region'].unique())}: set "
                             "split.test_regions=[...]")
        held_out = tiles["region"].isin(test_regions)
        split = pd.Series("test", index=tiles.index, name="split")
        rest = tiles.loc[~held_out, group]
        split.loc[~held_out] = grouped_split(rest, {"val": val_fraction}, seed)
        return split
    return grouped_split(tiles[group], {"test": test_fraction, "val": val_fraction}, seed)


def leave_one_region_out(tiles: pd.DataFrame, **kwargs) -> Iterator[tuple[str, pd.Series]]:
    """One split per region, that region being the test set."""
    for region in sorted(tiles["region"].unique()):
        yield region, assign_splits(tiles, test_regions=[region], **kwargs)


def label_order(tiles: pd.DataFrame, seed: int = 0, group: str = "location_id") -> list:
    """Labelled groups in the order they are added as the label budget grows.

    Positive groups (any slump pixel) and negative groups are shuffled separately and
    interleaved in proportion, with a positive group first, so every prefix holds slumps
    and roughly the overall share of positive groups. One order per seed makes the label
    subsets of growing fractions nested.
    """
    labelled = tiles[tiles["labelled_fraction"] > 0]
    positive = labelled.groupby(group)["positive_fraction"].max() > 0
    rng = np.random.default_rng(seed)
    ranked = []
    for flag in (True, False):
        members = sorted(positive.index[positive == flag])
        order = rng.permutation(len(members))
        start = 0.0 if flag else 0.5  # the first positive group leads
        ranked += [((rank + start) / len(members), not flag, members[i])
                   for rank, i in enumerate(order)]
    ranked.sort(key=lambda item: item[:2])
    return [name for _, _, name in ranked]


def label_subset(
    tiles: pd.DataFrame,
    fraction: float | None = None,
    count: int | None = None,
    seed: int = 0,
    group: str = "location_id",
) -> pd.Index:
    """Rows of ``tiles`` (a train split) whose labels are used: a fraction or a count of
    labelled groups (locations), drawn without replacement along :func:`label_order`.
    """
    if (fraction is None) == (count is None):
        raise ValueError("give exactly one of label_fraction and label_count")
    order = label_order(tiles, seed, group)
    if count is None:
        if not 0 < fraction <= 1:
            raise ValueError(f"label_fraction must be in (0, 1], got {fraction}")
        count = max(1, int(np.ceil(fraction * len(order))))
    if count > len(order):
        raise ValueError(f"label_count {count} exceeds the {len(order)} labelled locations")
    chosen = set(order[:count])
    return tiles.index[tiles[group].isin(chosen) & (tiles["labelled_fraction"] > 0)]
