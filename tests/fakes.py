"""Tiny fake inputs for tests: GeoTIFFs and polygon files written on the fly."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
from rasterio.transform import from_origin

ORIGIN = (600000.0, 7500000.0)  # UTM zone 8N, Peel Plateau latitude


def write_geotiff(
    path: Path,
    array: np.ndarray,
    crs: str | None = "EPSG:32608",
    resolution: float = 3.0,
    nodata: float | None = 0,
    descriptions: tuple[str, ...] | None = ("blue", "green", "red", "nir"),
    **profile,
) -> Path:
    """Write ``array`` (bands, rows, cols) as a GeoTIFF."""
    count, height, width = array.shape
    with rasterio.open(
        path, "w", driver="GTiff", width=width, height=height, count=count, dtype=array.dtype,
        crs=crs, transform=from_origin(*ORIGIN, resolution, resolution), nodata=nodata,
        **profile,
    ) as dst:
        dst.write(array)
        if descriptions:
            dst.descriptions = descriptions
    return path


def ramp_scene(bands: int = 4, size: int = 64, dtype=np.uint16) -> np.ndarray:
    """Distinct, recognisable values per band: band b holds 1000*(b+1) + row."""
    rows = np.arange(size, dtype=np.float64)[:, None] * np.ones((1, size))
    return np.stack([1000 * (b + 1) + rows for b in range(bands)]).astype(dtype)


def square_polygons(path: Path, squares: list[tuple[float, float, float]], crs="EPSG:32608",
                    **columns) -> Path:
    """Squares (x, y, side) in map units written as a vector file (driver from suffix)."""
    from shapely.geometry import box

    geoms = [box(x, y, x + side, y + side) for x, y, side in squares]
    gpd.GeoDataFrame(columns, geometry=geoms, crs=crs).to_file(path)
    return path
