"""Natural-colour PNG of a scene with polygon outlines: the first look at any data."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rts_ssl.data.scenes import Scene  # noqa: E402
from rts_ssl.data.tiles import write_atomic  # noqa: E402

RGB = ("red", "green", "blue")


def render_quicklook(
    scene_path: str | Path,
    output: str | Path,
    polygons: gpd.GeoDataFrame | None = None,
    band_names: list[str] | None = None,
    sensor: str | None = None,
    max_size: int = 1024,
    title: str | None = None,
) -> Path:
    """Write a PNG (2-98 % stretch, decimated read so memory is bounded by ``max_size``)."""
    output = Path(output)
    with Scene(scene_path, RGB, sensor=sensor, band_names=band_names) as scene:
        scale = max(1.0, max(scene.width, scene.height) / max_size)
        shape = (max(1, round(scene.height / scale)), max(1, round(scene.width / scale)))
        values, nodata = scene.read(out_shape=shape)
        extent = (scene.bounds.left, scene.bounds.right, scene.bounds.bottom, scene.bounds.top)
        crs = scene.crs
    rgb = values.astype(np.float32)
    rgb[:, nodata] = np.nan
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
