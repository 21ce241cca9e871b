"""The training data path: random tiles (or random patches of them) from a prepared dataset."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, default_collate

from rts_ssl.data.normalization import BandStats
from rts_ssl.data.sensors import band_indexes
from rts_ssl.data.tiles import TileStore, tile_starts
from rts_ssl.errors import InputError


class TileDataset(Dataset):
    """Normalised tiles as ``{"image", "mask", "ignore", "nodata"}`` tensors.

    ``crop_size`` smaller than the tile gives a random crop per access (random locations),
    or with ``grid=True`` (evaluation) every crop of a regular grid covering each tile once;
    ``bands`` selects bands by name from the prepared dataset (default: all of them).
    ``temporal_positives`` adds ``"positive"``: the same window of another date at the same
    location (the tile itself when the location was seen once), for contrastive learning.
    ``slump_crops``: the share of random crops placed to hold a slump pixel of their tile.
    ``stats``: normalise with these (by band name: the training split's, a model's) instead of
    the statistics of every tile of the store. ``count_once`` (evaluation grids): where
    windows of one scene overlap (overlapping tiles, the pulled-back last crop), each pixel is
    counted by one of them only (the others mark it ``ignore``), so that val / test metrics
    weigh every scene pixel once, as a map of the scene would. Grid datasets carry
    ``layout`` (:class:`WindowLayout`), and their batches each window's ``position``.
    """

    def __init__(
        self,
        store: TileStore | str | Path,
        indices: Sequence[int] | None = None,
        crop_size: int | None = None,
        bands: Sequence[str] | None = None,
        temporal_positives: bool = False,
        grid: bool = False,
        slump_crops: float = 0.0,
        stats: BandStats | None = None,
        count_once: bool = False,
    ) -> None:
        self.store = store if isinstance(store, TileStore) else TileStore(store)
        self.indices = np.arange(len(self.store)) if indices is None else np.asarray(indices)
        self.crop_size = crop_size or self.store.tile_size
        if self.crop_size > self.store.tile_size:
            raise InputError(self.store.root, f"crop size {self.crop_size} exceeds the tile "
                             f"size {self.store.tile_size}")
        bands = list(bands or self.store.bands)
        found = band_indexes(self.store.bands, bands)
        missing = [b for b, i in zip(bands, found, strict=True) if i is None]
        if missing:
            raise InputError(self.store.root, f"band {', '.join(missing)} not in the prepared "
                             f"dataset (bands: {', '.join(self.store.bands)})")
        # a plain slice when all bands are taken in stored order: no fancy-index copy per read
        self.band_index = slice(None) if found == list(range(len(self.store.bands))) else found
        stats = stats or BandStats.from_dict(self.store.info["normalization"])
        self.stats = stats.select([stats.bands[i] for i in band_indexes(stats.bands, bands)])
        self.partners = _other_dates(self.store.tiles) if temporal_positives else None
        self.slump_crops = slump_crops
        self.grid = self.layout = None
        if grid:
            starts = tile_starts(self.store.tile_size, self.crop_size, 0)
            self.grid = np.array([(r, c) for r in starts for c in starts])
            self.layout = self._window_layout()
        self.counted_elsewhere = (_counted_elsewhere(self.layout)
                                  if count_once and self.layout is not None else {})

    def __len__(self) -> int:
        return len(self.indices) * (1 if self.grid is None else len(self.grid))

    def _window_layout(self) -> WindowLayout:
        """Where the evaluation grid's windows (dataset positions) lie on their scenes."""
        tiles, grid = self.store.tiles.loc[self.indices], self.grid
        origins = (np.repeat(tiles[["row", "col"]].to_numpy(), len(grid), axis=0)
                   + np.tile(grid, (len(tiles), 1)))
        codes, names = pd.factorize(np.repeat(tiles["scene"].to_numpy(), len(grid)))
        shapes = np.zeros((len(names), 2), int)
        np.maximum.at(shapes, codes, origins + self.crop_size)
        return WindowLayout(codes, origins, shapes, self.crop_size)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([i])[0]

    def __getitems__(self, positions: list[int]) -> TileBatch:
        """A batch read into one array and normalised at once (DataLoader calls this)."""
        size, positions = self.crop_size, np.asarray(positions)
        if self.grid is None:
            tiles = self.indices[positions]
            offsets = torch.randint(0, self.store.tile_size - size + 1, (len(tiles), 2)).numpy()
            if self.slump_crops > 0:
                self._around_slumps(tiles, offsets)
        else:
            tiles = self.indices[positions // len(self.grid)]
            offsets = self.grid[positions % len(self.grid)]
        image, masks = self._read(tiles, offsets)
        for k, position in enumerate(positions.tolist()):
            if position in self.counted_elsewhere:
                masks[k, 1] |= self.counted_elsewhere[position]
        batched = {"image": image, "mask": masks[:, 0], "ignore": masks[:, 1].bool(),
                   "nodata": masks[:, 2].bool()}
        if self.grid is not None:  # where each window lies (self.layout)
            batched["position"] = torch.from_numpy(positions.astype(np.int64))
        if self.partners is not None:
            partner = np.array([np.random.choice(self.partners[t]) for t in tiles])
            batched["positive"] = self._read(partner, offsets)[0]
        return TileBatch(batched)

    def _around_slumps(self, tiles: np.ndarray, offsets: np.ndarray) -> None:
        """With probability ``slump_crops``, move a crop so that it holds a random slump
        pixel of its tile (in place): slumps of ~0.1 % of a tile are missed by most random
        crops, and a crop without them teaches nothing but background."""
        size, limit = self.crop_size, self.store.tile_size - self.crop_size
        chosen = np.flatnonzero(torch.rand(len(tiles)).numpy() < self.slump_crops)
        for k in chosen:
            rows, cols = np.nonzero(self.store.read(int(tiles[k]))[1][0])
            if len(rows):
                pick = int(torch.randint(0, len(rows), (1,)))
                shift = torch.randint(0, size, (2,)).numpy()
                offsets[k] = np.clip([rows[pick] - shift[0], cols[pick] - shift[1]], 0, limit)

    def _read(self, tiles: np.ndarray, offsets: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        size = self.crop_size
        image = np.empty((len(tiles), len(self.stats.bands), size, size), np.float32)
        masks = np.empty((len(tiles), 3, size, size), np.uint8)
        for k, (tile, (row, col)) in enumerate(zip(tiles, offsets, strict=True)):
            window = (slice(row, row + size), slice(col, col + size))
            tile_image, masks[k] = self.store.read(int(tile), window)
            np.copyto(image[k], tile_image[self.band_index], casting="unsafe")
        masks = torch.from_numpy(masks)
        return self.stats.normalize_(torch.from_numpy(image), masks[:, 2]), masks


@dataclass(frozen=True)
class WindowLayout:
    """Evaluation windows on their scenes: per dataset position the scene number and the
    scene pixel of the window's top-left corner; per scene the extent its windows cover."""

    scenes: np.ndarray   # (positions,) scene numbers 0..n-1
    origins: np.ndarray  # (positions, 2) row, column
    shapes: np.ndarray   # (scenes, 2) height, width
    size: int            # window side (px)


class TileBatch(list):
    """Per-sample dicts (what ``default_collate`` expects) that keep the batched tensors.

    :func:`collate_tiles` returns the batched tensors directly, saving a stacking copy.
    """

    def __init__(self, batched: dict[str, torch.Tensor]) -> None:
        size = len(next(iter(batched.values())))
        super().__init__({key: value[k] for key, value in batched.items()} for k in range(size))
        self.batched = batched


def collate_tiles(batch: list) -> dict[str, torch.Tensor]:
    """``collate_fn`` for TileDataset loaders: no copy for batches it built itself."""
    return batch.batched if isinstance(batch, TileBatch) else default_collate(batch)


def _counted_elsewhere(layout: WindowLayout) -> dict[int, torch.Tensor]:
    """For the evaluation windows (dataset positions: tile x grid crop) that share pixels
    with other windows of their scene: the pixels another window counts (uint8, 1 = there).

    A pixel goes to the covering window with the nearest centre (the first on ties): the
    scene is cut at the middle of each overlap, every pixel counted exactly once."""
    origins, size, scenes = layout.origins, layout.size, pd.Series(layout.scenes)
    offsets = np.arange(size) + 0.5
    elsewhere = {}
    for members in scenes.groupby(scenes).indices.values():
        for position in members:
            near = members[(np.abs(origins[members] - origins[position]) < size).all(axis=1)]
            if len(near) == 1:
                continue
            rows = origins[position, 0] + offsets - origins[near, :1]  # (windows, size)
            cols = origins[position, 1] + offsets - origins[near, 1:]
            distance = (rows - size / 2)[:, :, None] ** 2 + (cols - size / 2)[:, None, :] ** 2
            covers = (((rows > 0) & (rows < size))[:, :, None]
                      & ((cols > 0) & (cols < size))[:, None, :])
            other = near[np.where(covers, distance, np.inf).argmin(axis=0)] != position
            if other.any():
                elsewhere[int(position)] = torch.from_numpy(other.astype(np.uint8))
    return elsewhere


def _other_dates(tiles) -> dict[int, np.ndarray]:
    """For each tile, the tiles of the same location and grid position on other dates."""
    partners = {}
    for _, group in tiles.groupby(["location_id", "row", "col"]).groups.items():
        members = np.asarray(group)
        dates = tiles.loc[members, "date"].to_numpy()
        for member, date in zip(members, dates, strict=True):
            others = members[dates != date]
            partners[int(member)] = others if len(others) else np.array([member])
    return partners
