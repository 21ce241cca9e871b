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
    origin: tuple[float, float] = ORIGIN,
    **profile,
) -> Path:
    """Write ``array`` (bands, rows, cols) as a GeoTIFF, top-left corner at ``origin``."""
    count, height, width = array.shape
    with rasterio.open(
        path, "w", driver="GTiff", width=width, height=height, count=count, dtype=array.dtype,
        crs=crs, transform=from_origin(*origin, resolution, resolution), nodata=nodata,
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
                    layer: str | None = None, **columns) -> Path:
    """Squares (x, y, side) in map units written as a vector file (driver from suffix), as
    ``layer`` of it when given (GeoPackages hold several)."""
    from shapely.geometry import box

    geoms = [box(x, y, x + side, y + side) for x, y, side in squares]
    gpd.GeoDataFrame(columns, geometry=geoms, crs=crs).to_file(path, layer=layer)
    return path


def texture_scene(bands: int = 4, size: int = 64, seed: int = 0) -> np.ndarray:
    """Smooth random texture (uint16, never 0 = nodata), different per band."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(bands, size, size))
    kernel = np.ones(5) / 5
    for axis in (1, 2):
        noise = np.apply_along_axis(np.convolve, axis, noise, kernel, mode="same")
    return (2000 + 800 * noise + 300 * np.arange(bands)[:, None, None]).clip(1).astype(np.uint16)


def prepared_dataset(root: Path, bands: int = 4, places: int = 4, size: int = 96) -> Path:
    """A tiny prepared dataset: ``places`` places x 2 dates, one square slump each."""
    from rts_ssl.data.prepare import prepare_dataset
    from rts_ssl.data.sensors import SENSORS

    names = SENSORS["planetscope" if bands == 4 else "sentinel2_l2a"].bands
    squares = []
    for place in range(places):
        region = "east" if place % 2 else "west"
        (root / "scenes" / region).mkdir(parents=True, exist_ok=True)
        for date in ("2020-07-01", "2021-07-01"):
            array = texture_scene(bands, size, seed=place)
            write_geotiff(root / "scenes" / region / f"p{place}_{date}.tif", array,
                          descriptions=names)
        squares.append((ORIGIN[0] + 60, ORIGIN[1] - 150, 45))
    square_polygons(root / "labels.gpkg", squares[:1])
    data = {
        "name": "fake", "sensor": None, "bands": list(names[:4] if bands == 4 else names),
        "scenes": str(root / "scenes"), "labels": str(root / "labels.gpkg"),
        "pattern": r"(?P<region>[^/]+)/(?P<location>[^/]+)_(?P<date>\d{4}-\d{2}-\d{2})\.tif$",
        "tiles": {"size": 64, "overlap": 32, "max_nodata_fraction": 0.5,
                  "location_block_m": 100},
        "prepared": str(root / "prepared"),
    }
    prepare_dataset(data, root / "prepared")
    return root


def cone_dem(size: int = 101, slope_deg: float = 30.0, resolution: float = 2.0,
             top: float = 500.0) -> np.ndarray:
    """A cone (1, size, size) float32 whose flanks have ``slope_deg`` everywhere."""
    rows, cols = np.mgrid[:size, :size] - (size - 1) / 2
    radius_m = np.hypot(rows, cols) * resolution
    return (top - np.tan(np.radians(slope_deg)) * radius_m)[None].astype(np.float32)


def write_chip(path: Path, array: np.ndarray) -> Path:
    """A chip image without georeference (JPEG or PNG by suffix): ``array`` (C, H, W) uint8."""
    from PIL import Image

    planes = array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)
    Image.fromarray(np.ascontiguousarray(planes)).save(path, quality=95)
    return path
