"""Volume change of slumps from a pair of DEMs, with an honest uncertainty.

Both DEMs are resampled onto one metric grid (the first DEM's, or a UTM grid when it is
geographic). The second is co-registered on stable terrain outside the slumps: a horizontal
shift from the Nuth & Kaab (2011) slope/aspect fit, then a vertical offset (the median
difference). The spread of the difference on stable terrain (NMAD) gives each slump's
volume uncertainty, assuming fully correlated errors within a polygon (a conservative
bound: it never understates the uncertainty of small slumps).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.features import rasterize
from rasterio.warp import calculate_default_transform, reproject

from rts_ssl.data.terrain import aspect_radians, open_dem, slope_degrees
from rts_ssl.errors import InputError

NMAD_SCALE = 1.4826  # NMAD of a normal distribution equals its standard deviation
MIN_STABLE_PIXELS = 100


@dataclass(frozen=True)
class Grid:
    crs: CRS
    transform: Affine
    shape: tuple[int, int]

    @property
    def pixel_area_m2(self) -> float:
        return abs(self.transform.a * self.transform.e)


@dataclass(frozen=True)
class Coregistration:
    """How the second DEM was moved onto the first, and how well they then agree."""

    shift_east_m: float
    shift_north_m: float
    vertical_offset_m: float
    nmad_m: float
    stable_pixels: int


def nmad(values: np.ndarray) -> float:
    """Normalised median absolute deviation: a standard deviation robust to outliers."""
    return float(NMAD_SCALE * np.median(np.abs(values - np.median(values))))


def read_dem_pair(before: Path, after: Path) -> tuple[np.ndarray, np.ndarray, Grid]:
    """Both DEMs (float64, NaN = nodata) on the first DEM's grid, or UTM if it is geographic."""
    with open_dem(before) as src:
        grid = _metric_grid(src)
        first = _resample(src, grid)
    with open_dem(after) as src:
        second = _resample(src, grid)
    if not np.any(np.isfinite(first) & np.isfinite(second)):
        raise InputError(after, f"does not overlap {before} (no pixel valid in both DEMs)")
    return first, second, grid


def coregister(before: np.ndarray, after: np.ndarray, stable: np.ndarray, grid: Grid,
               iterations: int = 6) -> tuple[np.ndarray, Coregistration]:
    """Elevation change ``after - before`` once ``after`` is shifted (Nuth & Kaab) and offset
    onto ``before`` using the ``stable`` pixels; NaN where either DEM has no data."""
    res = abs(grid.transform.a)
    slope = np.radians(slope_degrees(before, res, abs(grid.transform.e)))
    aspect = aspect_radians(before, res, abs(grid.transform.e))
    east = north = 0.0
    moved = after
    for _ in range(iterations):
        dh = moved - before
        usable = stable & np.isfinite(dh) & (slope > np.radians(3.0))
        if usable.sum() < MIN_STABLE_PIXELS:
            break
        centre, spread = np.median(dh[usable]), nmad(dh[usable])
        usable &= np.abs(dh - centre) <= 4 * spread  # outliers: vegetation, artefacts
        step_east, step_north = _nuth_kaab_step(dh[usable], slope[usable], aspect[usable])
        east, north = east + step_east, north + step_north
        moved = _shifted(after, grid, east, north)
        if np.hypot(step_east, step_north) < 0.05 * res:
            break
    dh = moved - before
    valid = stable & np.isfinite(dh)
    if valid.sum() < MIN_STABLE_PIXELS:
        raise InputError("dem_before/dem_after", f"only {int(valid.sum())} stable pixels "
                         "outside the polygons where both DEMs are valid; cannot co-register")
    offset = float(np.median(dh[valid]))
    spread = nmad(dh[valid] - offset)
    return dh - offset, Coregistration(east, north, offset, spread, int(valid.sum()))


def polygon_volumes(change: np.ndarray, polygons: gpd.GeoDataFrame, grid: Grid,
                    registration: Coregistration) -> gpd.GeoDataFrame:
    """Per polygon: mean/max elevation loss, volume change and its 1-sigma uncertainty.

    Volume = mean change over the valid pixels x polygon area (gaps filled with the mean);
    polygons the DEMs do not cover get NaN and a ``status`` saying so.
    """
    rows = []
    for geometry in polygons.geometry:
        inside = rasterize([geometry], grid.shape, transform=grid.transform) > 0
        values = change[inside & np.isfinite(change)]
        coverage = values.size / max(int(inside.sum()), 1)
        area = float(geometry.area)
        row = {"area_m2": area, "coverage": coverage, "mean_dh_m": np.nan,
               "max_loss_m": np.nan, "volume_m3": np.nan, "volume_sigma_m3": np.nan}
        if values.size:
            row.update(mean_dh_m=float(values.mean()), max_loss_m=float(-values.min()),
                       volume_m3=float(values.mean() * area),
                       volume_sigma_m3=registration.nmad_m * area)
        row["status"] = ("ok" if coverage >= 0.99 else "outside DEM overlap" if not values.size
                         else f"partly covered ({coverage:.0%})")
        rows.append(row)
    result = polygons.copy()
    for key in ("area_m2", "coverage", "mean_dh_m", "max_loss_m", "volume_m3",
                "volume_sigma_m3", "status"):
        result[key] = [row[key] for row in rows]
    return result


def stable_terrain(polygons: gpd.GeoDataFrame, grid: Grid, buffer_m: float) -> np.ndarray:
    """Pixels farther than ``buffer_m`` from every polygon."""
    shapes = [g for g in polygons.geometry.buffer(buffer_m) if not g.is_empty]
    if not shapes:
        return np.ones(grid.shape, bool)
    return rasterize(shapes, grid.shape, transform=grid.transform, all_touched=True) == 0


def registration_dict(registration: Coregistration) -> dict:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in
            asdict(registration).items()}


def _metric_grid(src) -> Grid:
    if not src.crs.is_geographic:
        return Grid(src.crs, src.transform, (src.height, src.width))
    from pyproj.aoi import AreaOfInterest
    from pyproj.database import query_utm_crs_info

    left, bottom, right, top = src.bounds
    utm = query_utm_crs_info("WGS 84", area_of_interest=AreaOfInterest(left, bottom, right,
                                                                       top))[0]
    crs = CRS.from_epsg(int(utm.code))
    transform, width, height = calculate_default_transform(src.crs, crs, src.width,
                                                           src.height, *src.bounds)
    return Grid(crs, transform, (height, width))


def _resample(src, grid: Grid) -> np.ndarray:
    out = np.full(grid.shape, np.nan, np.float64)
    reproject(rasterio.band(src, 1), out, dst_transform=grid.transform, dst_crs=grid.crs,
              dst_nodata=np.nan, resampling=Resampling.bilinear)
    return out


def _shifted(values: np.ndarray, grid: Grid, east: float, north: float) -> np.ndarray:
    """``values`` resampled so that the surface moves by ``(-east, -north)`` metres."""
    out = np.full(grid.shape, np.nan, np.float64)
    reproject(values, out, src_transform=Affine.translation(-east, -north) * grid.transform,
              src_crs=grid.crs, src_nodata=np.nan, dst_transform=grid.transform,
              dst_crs=grid.crs, dst_nodata=np.nan, resampling=Resampling.bilinear)
    return out


def _nuth_kaab_step(dh: np.ndarray, slope: np.ndarray, aspect: np.ndarray) -> tuple[float, float]:
    """Horizontal shift (east, north) in metres of the second DEM relative to the first.

    A surface displaced by ``s`` changes by ``dh = tan(slope) * (s_east sin(aspect) +
    s_north cos(aspect))`` (+ a vertical bias): a linear least-squares fit of dh/tan(slope).
    """
    tan = np.tan(slope)
    design = np.c_[np.sin(aspect), np.cos(aspect), 1.0 / tan]
    (east, north, _), *_ = np.linalg.lstsq(design, dh / tan, rcond=None)
    return float(east), float(north)
