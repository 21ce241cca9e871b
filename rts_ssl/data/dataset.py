"""The training data path: random tiles (or random patches of them) from a prepared dataset."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from rts_ssl.data.normalization import BandStats
from rts_ssl.data.sensors import band_indexes
from rts_ssl.data.tiles import TileStore
from rts_ssl.errors import InputError


class TileDataset(Dataset):
    """Normalised tiles as ``{"image", "mask", "ignore"}`` tensors.

    ``patch_size`` smaller than the tile gives a random crop per access (random locations);
    ``bands`` selects bands by name from the prepared dataset (default: all of them).
    """

    def __init__(
        self,
        store: TileStore | str | Path,
        indices: Sequence[int] | None = None,
        patch_size: int | None = None,
        bands: Sequence[str] | None = None,
    ) -> None:
        self.store = store if isinstance(store, TileStore) else TileStore(store)
        self.indices = np.arange(len(self.store)) if indices is None else np.asarray(indices)
        self.patch_size = patch_size or self.store.tile_size
        if self.patch_size > self.store.tile_size:
            raise InputError(self.store.root, f"patch size {self.patch_size} exceeds the tile "
                             f"size {self.store.tile_size}")
        bands = list(bands or self.store.bands)
        found = band_indexes(self.store.bands, bands)
        missing = [b for b, i in zip(bands, found, strict=True) if i is None]
        if missing:
            raise InputError(self.store.root, f"band {', '.join(missing)} not in the prepared "
                             f"dataset (bands: {', '.join(self.store.bands)})")
        # a plain slice when all bands are taken in stored order: no fancy-index copy per read
        self.band_index = slice(None) if found == list(range(len(self.store.bands))) else found
        stats = BandStats.from_dict(self.store.info["normalization"])
        self.stats = stats.select([stats.bands[i] for i in found])

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([i])[0]

    def __getitems__(self, positions: list[int]) -> list[dict[str, torch.Tensor]]:
        """A batch read into one array and normalised at once (DataLoader calls this)."""
        size, tile_size = self.patch_size, self.store.tile_size
        image = np.empty((len(positions), len(self.stats.bands), size, size), np.float32)
        masks = np.empty((len(positions), 3, size, size), np.uint8)
        offsets = torch.randint(0, tile_size - size + 1, (len(positions), 2)).tolist()
        for k, (position, (row, col)) in enumerate(zip(positions, offsets, strict=True)):
            window = (slice(row, row + size), slice(col, col + size))
            tile_image, masks[k] = self.store.read(int(self.indices[position]), window)
            np.copyto(image[k], tile_image[self.band_index], casting="unsafe")
        masks = torch.from_numpy(masks)
        image = self.stats.normalize_(torch.from_numpy(image), masks[:, 2])
        return [{"image": image[k], "mask": masks[k, 0], "ignore": masks[k, 1].bool()}
                for k in range(len(positions))]
