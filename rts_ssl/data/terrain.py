"""Terrain layers from a DEM (slope, relative elevation, hillshade) as named input bands.

Slumps are cut into slopes, so a model gains from seeing the terrain. The layers are
computed on the DEM's own grid (metric pixel spacing even for geographic DEMs), from a DEM
window with a margin wide enough that the local mean of ``relative_elevation`` has no seams,
then resampled bilinearly onto the requested (optical) grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.warp import reproject, transform_bounds
from rasterio.windows import Window, from_bounds

from rts_ssl.errors import InputError

TERRAIN_BANDS = ("slope", "relative_elevation", "hillshade")
RADIUS_M = 100.0  # default radius of the local mean behind relative_elevation
SUN_AZIMUTH, SUN_ALTITUDE = 315.0, 45.0  # degrees, the cartographic convention
# WGS84 metres per degree of latitude (mean) and of longitude at the equator
METRES_PER_DEGREE_LAT, METRES_PER_DEGREE_LON = 111_132.95, 111_319.49


def slope_degrees(elevation: np.ndarray, dx: np.ndarray | float, dy: float) -> np.ndarray:
    """Slope in degrees from central differences; ``dx`` may vary by row (geographic DEMs)."""
    gx, gy = _gradients(elevation, dx, dy)
    return np.degrees(np.arctan(np.hypot(gx, gy)))


def aspect_radians(elevation: np.ndarray, dx: np.ndarray | float, dy: float) -> np.ndarray:
    """Direction the slope faces (downslope), radians clockwise from north."""
    return _facing(*_gradients(elevation, dx, dy))


def hillshade(elevation: np.ndarray, dx: np.ndarray | float, dy: float,
              azimuth: float = SUN_AZIMUTH, altitude: float = SUN_ALTITUDE) -> np.ndarray:
    """Illumination 0-1 of the terrain by a sun at ``azimuth``/``altitude`` (degrees)."""
    gx, gy = _gradients(elevation, dx, dy)
    slope, aspect = np.arctan(np.hypot(gx, gy)), _facing(gx, gy)
    zenith, sun = np.radians(90.0 - altitude), np.radians(azimuth)
    shade = (np.cos(zenith) * np.cos(slope)
             + np.sin(zenith) * np.sin(slope) * np.cos(sun - aspect))
    return np.clip(shade, 0.0, 1.0)


def relative_elevation(elevation: np.ndarray, radius_px: tuple[int, int]) -> np.ndarray:
    """Elevation minus its mean over a ``(2 ry + 1) x (2 rx + 1)`` box of valid pixels."""
    ry, rx = radius_px
    valid = np.isfinite(elevation)
    total = _box_sum(np.where(valid, elevation, 0.0), ry, rx)
    count = _box_sum(valid.astype(np.float64), ry, rx)
    with np.errstate(invalid="ignore", divide="ignore"):
        return elevation - total / count


def terrain_layers(elevation: np.ndarray, dx: np.ndarray | float, dy: float,
                   layers: Sequence[str], radius_m: float = RADIUS_M) -> np.ndarray:
    """The requested layers, ``(len(layers), H, W)`` float32, NaN where the DEM is nodata."""
    unknown = [name for name in layers if name not in TERRAIN_BANDS]
    if unknown:
        raise ValueError(f"unknown terrain layers {unknown}; known: {TERRAIN_BANDS}")
    elevation = elevation.astype(np.float64)
    mean_dx = float(np.mean(dx))
    make = {
        "slope": lambda: slope_degrees(elevation, dx, dy),
        "hillshade": lambda: hillshade(elevation, dx, dy),
        "relative_elevation": lambda: relative_elevation(
            elevation, (max(1, round(radius_m / dy)), max(1, round(radius_m / mean_dx)))),
    }
    return np.stack([make[name]() for name in layers]).astype(np.float32)


def pixel_spacing_m(src, window: Window) -> tuple[np.ndarray | float, float]:
    """Pixel width (per row) and height in metres of a window of ``src``."""
    res_x, res_y = abs(src.transform.a), abs(src.transform.e)
    if not src.crs.is_geographic:
        factor = src.crs.linear_units_factor[1]
        return res_x * factor, res_y * factor
    transform = src.window_transform(window)
    lats = transform.f + transform.e * (np.arange(int(window.height)) + 0.5)
    dx = res_x * METRES_PER_DEGREE_LON * np.cos(np.radians(lats))
    return dx[:, None], res_y * METRES_PER_DEGREE_LAT


def open_dem(path: str | Path):
    """An open DEM dataset; unreadable files and DEMs without a CRS are one-line errors."""
    try:
        src = rasterio.open(path)
    except (RasterioError, OSError) as err:
        raise InputError(path, f"not a readable DEM GeoTIFF ({err})") from None
    if src.crs is None:
        src.close()
        raise InputError(path, "DEM has no CRS; assign one (e.g. gdal_edit.py -a_srs)")
    return src


class TerrainSource:
    """A DEM GeoTIFF that produces terrain layers on any target grid."""

    def __init__(self, path: str | Path, radius_m: float = RADIUS_M) -> None:
        self.path = Path(path)
        self.radius_m = radius_m
        self._src = open_dem(self.path)

    def read(self, layers: Sequence[str], crs: CRS, transform, shape: tuple[int, int]
             ) -> np.ndarray:
        """Layers on the target grid ``(crs, transform, shape)``; NaN outside the DEM."""
        src = self._src
        out = np.full((len(layers), *shape), np.nan, np.float32)
        window = self._window_with_margin(crs, transform, shape)
        if window is None:
            return out
        elevation = src.read(1, window=window, masked=True).astype(np.float64).filled(np.nan)
        dx, dy = pixel_spacing_m(src, window)
        values = terrain_layers(elevation, dx, dy, layers, self.radius_m)
        for k in range(len(layers)):
            reproject(values[k], out[k], src_transform=src.window_transform(window),
                      src_crs=src.crs, src_nodata=np.nan, dst_transform=transform, dst_crs=crs,
                      dst_nodata=np.nan, resampling=Resampling.bilinear)
        return out

    def _window_with_margin(self, crs, transform, shape) -> Window | None:
        """The DEM window under the target grid, widened by the local-mean radius."""
        src = self._src
        height, width = shape
        left, top = transform * (0, 0)
        right, bottom = transform * (width, height)
        bounds = transform_bounds(crs, src.crs, min(left, right), min(top, bottom),
                                  max(left, right), max(top, bottom))
        window = from_bounds(*bounds, transform=src.transform)
        dx, dy = pixel_spacing_m(src, Window(0, 0, src.width, src.height))
        margin_x = math.ceil(self.radius_m / float(np.min(dx))) + 2
        margin_y = math.ceil(self.radius_m / dy) + 2
        col0, row0 = math.floor(window.col_off) - margin_x, math.floor(window.row_off) - margin_y
        col1 = math.ceil(window.col_off + window.width) + margin_x
        row1 = math.ceil(window.row_off + window.height) + margin_y
        col0, row0 = max(col0, 0), max(row0, 0)
        col1, row1 = min(col1, src.width), min(row1, src.height)
        if col1 <= col0 or row1 <= row0:
            return None
        return Window(col0, row0, col1 - col0, row1 - row0)

    def close(self) -> None:
        self._src.close()


def _gradients(elevation, dx, dy) -> tuple[np.ndarray, np.ndarray]:
    """d(elevation)/d(east) and d(elevation)/d(north) in m/m (rows run southwards)."""
    gy, gx = np.gradient(elevation)
    return gx / dx, -gy / dy


def _facing(gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """Downslope direction, radians clockwise from north, from east/north gradients."""
    return np.arctan2(-gx, -gy)


def _box_sum(values: np.ndarray, ry: int, rx: int) -> np.ndarray:
    """Sum over a box of half-sizes ``(ry, rx)`` around each pixel (integral image)."""
    padded = np.pad(values, ((ry + 1, ry), (rx + 1, rx)))
    integral = padded.cumsum(0).cumsum(1)
    h, w = values.shape
    return (integral[2 * ry + 1:2 * ry + 1 + h, 2 * rx + 1:2 * rx + 1 + w]
            - integral[:h, 2 * rx + 1:2 * rx + 1 + w]
            - integral[2 * ry + 1:2 * ry + 1 + h, :w] + integral[:h, :w])
