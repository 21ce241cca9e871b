"""Figures of change: an elevation-difference map and slump areas through time."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from rts_ssl.files import write_atomic  # noqa: E402


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


def render_timeseries(series: pd.DataFrame, output: Path, top: int = 12,
                      title: str = "slump area through time", gap_days: int = 120) -> Path:
    """Area over time of the ``top`` largest slumps, one colour each: filled markers where
    the slump was observed, hollow where nodata or cloud hid it (those dates are left out of
    the fits); lines break across gaps longer than ``gap_days`` (winters)."""
    largest = (series.groupby("slump_id")["area_m2"].max().sort_values(ascending=False)
               .index[:top])
    colours = plt.get_cmap("tab20" if len(largest) > 10 else "tab10").colors
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    for i, slump_id in enumerate(largest):
        colour = colours[i % len(colours)]
        part = series[series["slump_id"] == slump_id].sort_values("date")
        dates = pd.to_datetime(part["date"])
        seen = part["observed"].to_numpy(bool)
        shown, area = dates[seen], part["area_m2"][seen]
        season = (shown.diff().dt.days > gap_days).cumsum()  # a new line after each winter
        for k in season.unique():
            ax.plot(shown[season == k], area[season == k], marker="o", markersize=3,
                    linewidth=1, color=colour, label=f"slump {slump_id}" if k == 0 else None)
        ax.plot(dates[~seen], part["area_m2"][~seen], linestyle="none", marker="o",
                markersize=4, markerfacecolor="none", color=colour)
    ax.set_xlabel("date")
    ax.set_ylabel("area (m²)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if len(largest):
        ax.legend(fontsize=7, ncol=2, frameon=False)
    fig.autofmt_xdate()
    fig.tight_layout()
    write_atomic(output, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return output
