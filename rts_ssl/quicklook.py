"""Natural-colour PNG of a scene with polygon outlines: the first look at any data."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import geopandas as gpd
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from rasterio.windows import Window  # noqa: E402

from rts_ssl.data.scenes import Scene  # noqa: E402
from rts_ssl.data.sensors import band_indexes  # noqa: E402
from rts_ssl.files import write_atomic  # noqa: E402

RGB = ("red", "green", "blue")
MAX_SIZE = 1024  # px a side of a quicklook's image
STRIP_PIXELS = 4_000_000  # source pixels per band read at once: bounds memory on any scene


class BlockMeans:
    """Mean of the valid pixels in each ``factor`` x ``factor`` block of a scene (NaN where
    none), fed with full-resolution rows in any order and chunk size: by its own strip reads
    (:meth:`read`, much faster than GDAL's decimated reads of compressed tiles), or by the
    strips ``predict`` reads anyway, so a quicklook costs no second pass over the scene."""

    def __init__(self, bands: int, height: int, width: int, factor: int,
                 select: list[int] | None = None) -> None:
        self.factor = factor
        self.select = select  # the bands to average out of each fed row (None: all)
        self.shape = (max(height // factor, 1), max(width // factor, 1))
        self.total = np.zeros((bands, *self.shape), np.float64)
        self.count = np.zeros(self.shape, np.int64)

    @classmethod
    def of_scene(cls, scene: Scene, max_size: int = MAX_SIZE,
                 select: list[int] | None = None) -> BlockMeans:
        """Blocks that bring ``scene`` down to at most ``max_size`` px a side."""
        factor = max(1, math.ceil(max(scene.width, scene.height) / max_size))
        bands = len(select) if select is not None else len(scene.bands)
        return cls(bands, scene.height, scene.width, factor, select)

    def add(self, top: int, values: np.ndarray, nodata: np.ndarray) -> None:
        """Rows ``top ..`` of the scene (``values`` ``(bands, rows, width)``); rows below the
        last whole block are cropped, as are columns right of it."""
        f, (height, width) = self.factor, self.shape
        if self.select is not None:
            values = values[self.select]
        rows = np.arange(top, top + values.shape[1])
        keep = rows < height * f
        if not keep.any():
            return
        values, nodata = values[:, keep, :width * f], nodata[keep, :width * f]
        valid = (~nodata).reshape(len(nodata), width, f).sum(axis=2)
        total = np.where(nodata, 0, values).astype(np.float32)
        total = total.reshape(len(values), len(nodata), width, f).sum(axis=3)
        # a chunk's rows are consecutive: sum each run of rows of one block, then add once
        # per block (np.add.at per row is ~20x slower); chunks may come in any order
        block = rows[keep] // f
        starts = np.flatnonzero(np.r_[True, block[1:] != block[:-1]])
        self.count[block[starts]] += np.add.reduceat(valid, starts, axis=0)
        self.total[:, block[starts]] += np.add.reduceat(total, starts, axis=1)

    def read(self, scene: Scene) -> BlockMeans:
        """Feed the whole of ``scene`` (its bands in this order) in bounded strips."""
        rows = max(self.factor, STRIP_PIXELS // max(scene.width, 1) // self.factor * self.factor)
        for top in range(0, self.shape[0] * self.factor, rows):
            window = Window(0, top, scene.width, min(rows, scene.height - top))
            self.add(top, *scene.read(window))
        return self

    @classmethod
    def of_rgb_in(cls, scene: Scene) -> BlockMeans | None:
        """Block means of red, green and blue fed with rows of all of ``scene``'s bands (as
        ``predict`` reads them); None when ``scene`` is not read with those three bands."""
        select = band_indexes(scene.bands, RGB)
        return None if None in select else cls.of_scene(scene, select=select)

    def means(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, self.total / self.count, np.nan).astype(np.float32)


def render_quicklook(
    scene_path: str | Path,
    output: str | Path,
    polygons: gpd.GeoDataFrame | None = None,
    scene_options: Mapping | None = None,
    max_size: int = MAX_SIZE,
    title: str | None = None,
    blocks: BlockMeans | None = None,
) -> Path:
    """Write a PNG (2-98 % stretch) of the scene averaged down to at most ``max_size`` px.

    ``scene_options``: how to read the scene (``Scene`` keywords, e.g. band names, offset);
    ``blocks``: its red, green and blue block means if already gathered (else read here).
    """
    output = Path(output)
    options = {k: v for k, v in (scene_options or {}).items() if k not in ("dem", "auxiliary")}
    with Scene(scene_path, RGB, **options) as scene:
        blocks = blocks or BlockMeans.of_scene(scene, max_size).read(scene)
        rgb, factor = blocks.means(), blocks.factor
        shape = rgb.shape[1:]
        transform = scene.transform
        extent = (transform.c, transform.c + shape[1] * factor * transform.a,
                  transform.f + shape[0] * factor * transform.e, transform.f)
        crs = scene.crs
    low, high = np.nanpercentile(rgb, (2, 98), axis=(1, 2), keepdims=True)
    rgb = np.clip((rgb - low) / np.maximum(high - low, 1e-9), 0, 1).transpose(1, 2, 0)
    rgb = np.nan_to_num(rgb, nan=1.0)
    fig, ax = plt.subplots(figsize=(6, 6 * shape[0] / shape[1]), dpi=100)
    ax.imshow(rgb, extent=extent)
    if polygons is not None and len(polygons):
        polygons.to_crs(crs).boundary.plot(ax=ax, color="red", linewidth=1.0)
    ax.set_title(title or Path(scene_path).stem, fontsize=9)
    ax.set_axis_off()
    fig.tight_layout()
    write_atomic(output, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return output
