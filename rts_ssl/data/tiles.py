"""The prepared tile store: raw tiles in flat memory-mappable files, one shard per scene.

Why flat files and not zarr or GeoTIFF: training reads random tiles thousands of times per
second; an uncompressed ``(N, C, T, T)`` array behind ``numpy.memmap`` is a single page-cache
copy per sample, with no codec and no chunk index. Tiles are written sequentially (append),
so a scene of any size streams to disk. Each shard directory is written under a temporary
name and renamed when complete, which makes preparation atomic per scene and resumable.

Layout of a prepared dataset::

    dataset.yaml        bands, tiling, normalisation statistics, shards
    tiles.parquet       one row per tile (see TILE_COLUMNS)
    shards/<key>/image.bin   (N, C, T, T) in the scene's dtype
    shards/<key>/masks.bin   (N, 3, T, T) uint8 planes: MASK_PLANES
    shards/<key>/tiles.parquet, shard.json
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from rts_ssl.errors import InputError
from rts_ssl.files import temporary_path

FORMAT = "rts_ssl.tiles/1"
log = logging.getLogger(__name__)
MASK_PLANES = ("mask", "ignore", "nodata")  # slump=1; 1=excluded from loss; 1=no data
MAX_OPEN = 256  # shards mapped at once: each map holds a file descriptor
TILE_COLUMNS = (
    "tile_id", "shard", "index", "scene", "image_id", "date", "region", "place", "location_id",
    "row", "col", "minx", "miny", "maxx", "maxy", "crs", "positive_fraction",
    "nodata_fraction", "labelled_fraction",
)  # fmt: skip


def tile_starts(length: int, size: int, overlap: int) -> list[int]:
    """Tile offsets along one axis; the last tile is pulled back to end at the edge."""
    if size > length:
        return []
    stride = size - overlap
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] + size < length:
        starts.append(length - size)
    return starts


class ShardWriter:
    """Appends tiles of one scene to a temporary shard directory; ``commit`` renames it."""

    def __init__(self, root: Path, key: str) -> None:
        self.final = root / "shards" / key
        self.tmp = temporary_path(root / "shards" / key)
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        self._image = open(self.tmp / "image.bin", "wb")  # noqa: SIM115 (closed in commit)
        self._masks = open(self.tmp / "masks.bin", "wb")  # noqa: SIM115
        self.rows: list[dict] = []
        self.dtype: str | None = None

    def append(self, image: np.ndarray, masks: np.ndarray, row: dict) -> None:
        self.dtype = self.dtype or image.dtype.str
        self._image.write(np.ascontiguousarray(image).tobytes())
        self._masks.write(np.ascontiguousarray(masks, dtype=np.uint8).tobytes())
        self.rows.append({**row, "shard": self.final.name, "index": len(self.rows)})

    def commit(self, info: dict) -> pd.DataFrame:
        """Close the files, write the shard's table and rename it into place."""
        self._image.close()
        self._masks.close()
        table = pd.DataFrame(self.rows, columns=list(TILE_COLUMNS))
        table.to_parquet(self.tmp / "tiles.parquet", index=False)
        (self.tmp / "shard.json").write_text(json.dumps({**info, "dtype": self.dtype,
                                                         "count": len(self.rows)}))
        shutil.rmtree(self.final, ignore_errors=True)
        os.replace(self.tmp, self.final)
        return table

    def abort(self) -> None:
        self._image.close()
        self._masks.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def shard_is_complete(root: Path, key: str) -> bool:
    return (root / "shards" / key / "shard.json").is_file()


def any_shard(root: Path) -> bool:
    """Whether any scene's shard is complete in ``root``."""
    return any((root / "shards").glob("*/shard.json"))


def read_dataset_info(root: Path) -> dict:
    """The ``dataset.yaml`` of a prepared dataset, checked for format."""
    meta = root / "dataset.yaml"
    if not meta.is_file():
        raise InputError(root, "not a prepared dataset (no dataset.yaml); run prepare")
    info = yaml.safe_load(meta.read_text())
    if info.get("format") != FORMAT:
        raise InputError(meta, f"unknown format {info.get('format')!r}")
    return info


@dataclass
class _Shard:
    image: np.ndarray
    masks: np.ndarray


class TileStore:
    """Random access to a prepared dataset. Memory maps open lazily in each process."""

    def __init__(
        self, root: str | Path, info: dict | None = None, tiles: pd.DataFrame | None = None
    ) -> None:
        self.root = Path(root)
        if info is None:
            info, tiles = read_dataset_info(self.root), pd.read_parquet(self.root / "tiles.parquet")
        self.info, self.tiles = info, tiles
        self.bands: list[str] = list(self.info["bands"])
        self.tile_size: int = int(self.info["tile_size"])
        self._shard_info = {s["key"]: s for s in self.info["shards"]}
        self._open: OrderedDict[str, _Shard] = OrderedDict()
        self._shard_of = self.tiles["shard"].to_numpy()
        self._index_of = self.tiles["index"].to_numpy()

    def __len__(self) -> int:
        return len(self.tiles)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_open": OrderedDict()}  # maps reopen in each process

    def shard(self, key: str) -> _Shard:
        """Memory maps of a shard, kept for the last MAX_OPEN shards (each holds a file)."""
        if key in self._open:
            self._open.move_to_end(key)
        else:
            info, size, bands = self._shard_info[key], self.tile_size, len(self.bands)
            folder = self.root / "shards" / key
            image = np.memmap(folder / "image.bin", dtype=np.dtype(info["dtype"]), mode="r",
                              shape=(info["count"], bands, size, size))
            masks = np.memmap(folder / "masks.bin", dtype=np.uint8, mode="r",
                              shape=(info["count"], len(MASK_PLANES), size, size))
            self._open[key] = _Shard(image, masks)
            if len(self._open) > MAX_OPEN:
                self._open.popitem(last=False)
        return self._open[key]

    def read(self, i: int, window: tuple[slice, slice] | None = None):
        """Raw image ``(C, h, w)`` and mask planes ``(3, h, w)`` of tile ``i``."""
        shard = self.shard(self._shard_of[i])
        j = self._index_of[i]
        rows, cols = window or (slice(None), slice(None))
        return shard.image[j, :, rows, cols], shard.masks[j, :, rows, cols]
