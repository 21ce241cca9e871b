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
from rts_ssl.files import write_atomic  # noqa: E402

RGB = ("red", "green", "blue")
STRIP_PIXELS = 4_000_000  # source pixels per band read at once: bounds memory on any scene


def block_means(scene: Scene, factor: int) -> np.ndarray:
    """Mean of the valid pixels in each ``factor`` x ``factor`` block (NaN where none), read
    in full-resolution strips: much faster than GDAL's decimated reads of compressed tiles."""
    height, width = scene.height // factor, scene.width // factor
    out = np.full((len(scene.bands), max(height, 1), max(width, 1)), np.nan, np.float32)
    rows = max(1, STRIP_PIXELS // (factor * factor * max(width, 1)))
    for top in range(0, height, rows):
        count = min(rows, height - top)
        window = Window(0, top * factor, width * factor, count * factor)
        values, nodata = scene.read(window)
        valid = (~nodata).reshape(count, factor, width, factor).sum(axis=(1, 3))
        total = np.where(nodata, 0, values).astype(np.float32)
        total = total.reshape(len(values), count, factor, width, factor).sum(axis=(2, 4))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, top:top + count] = np.where(valid > 0, total / valid, np.nan)
    return out


def render_quicklook(
    scene_path: str | Path,
    output: str | Path,
    polygons: gpd.GeoDataFrame | None = None,
    scene_options: Mapping | None = None,
    max_size: int = 1024,
    title: str | None = None,
) -> Path:
    """Write a PNG (2-98 % stretch) of the scene averaged down to at most ``max_size`` px.

    ``scene_options``: how to read the scene (``Scene`` keywords, e.g. band names, offset).
    """
    output = Path(output)
    options = {k: v for k, v in (scene_options or {}).items() if k not in ("dem", "auxiliary")}
    with Scene(scene_path, RGB, **options) as scene:
        factor = max(1, math.ceil(max(scene.width, scene.height) / max_size))
        rgb = block_means(scene, factor)
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
