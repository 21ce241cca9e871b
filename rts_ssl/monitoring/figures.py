"""Figures of change: an elevation-difference map with slump outlines."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rts_ssl.data.tiles import write_atomic  # noqa: E402


def render_change_map(change: np.ndarray, grid, polygons: gpd.GeoDataFrame,
                      output: Path) -> Path:
    """Elevation change (m, blue = loss) with polygon outlines, symmetric colour scale."""
    height, width = grid.shape
    left, top = grid.transform * (0, 0)
    right, bottom = grid.transform * (width, height)
    limit = float(np.nanpercentile(np.abs(change), 99.5)) if np.isfinite(change).any() else 1
    fig, ax = plt.subplots(figsize=(7, 6 * height / width + 0.5), dpi=100)
    image = ax.imshow(change, extent=(left, right, bottom, top), cmap="RdBu",
                      vmin=-limit, vmax=limit)
    if len(polygons):
        polygons.boundary.plot(ax=ax, color="black", linewidth=0.8)
    fig.colorbar(image, ax=ax, label="elevation change (m)", shrink=0.8)
    ax.set_title(f"elevation change after co-registration; {len(polygons)} polygons",
                 fontsize=9)
    ax.set_axis_off()
    fig.tight_layout()
    write_atomic(output, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return output
