"""Slump time series: per-date observations of linked tracks, growth rates, boundary advance.

Each row says whether the slump was ``detected`` (predicted) on that date and whether it was
``observed`` (its footprint visible: not mostly nodata or cloud). A date on which it was
observed but not detected has area 0; a date on which it was hidden is kept but left out of
the fits: a hidden slump did not shrink.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from rts_ssl.monitoring.date_rasters import DateRaster
from rts_ssl.monitoring.linking import Track

DAYS_PER_YEAR = 365.25


def decimal_year(date: str) -> float:
    day = datetime.date.fromisoformat(date)
    start = datetime.date(day.year, 1, 1)
    return day.year + (day - start).days / DAYS_PER_YEAR


def theil_sen(x: np.ndarray, y: np.ndarray) -> float:
    """Median of pairwise slopes: a line fit that a few wrong dates do not move."""
    if len(x) < 2:
        return float("nan")
    i, j = np.triu_indices(len(x), k=1)
    dx = x[j] - x[i]
    keep = dx != 0
    return float(np.median((y[j] - y[i])[keep] / dx[keep])) if keep.any() else float("nan")


def max_boundary_advance(first: shapely.Geometry, last: shapely.Geometry,
                         step: float) -> float:
    """Largest distance (m) of the last outline beyond the first (0 when inside it)."""
    outline = shapely.segmentize(last.boundary, step)
    points = shapely.points(shapely.get_coordinates(outline))
    return float(np.max(shapely.distance(first, points))) if len(points) else 0.0


def observations(tracks: Sequence[Track], rasters: Sequence[DateRaster], min_valid: float,
                 crs) -> gpd.GeoDataFrame:
    """One row per slump and date from its first to its last date (geometry, area_m2, date,
    mean_prob, valid_fraction, detected, observed). Dates where the slump was not detected
    but its footprint was visible get area 0; hidden dates are kept, marked not observed.
    """
    rows = []
    for track in tracks:
        dates = sorted(track.geometries)
        footprint = shapely.union_all(list(track.geometries.values()))
        for raster in rasters:
            if not dates[0] <= raster.date <= dates[-1]:
                continue
            geometry = track.geometries.get(raster.date)
            valid, mean_prob = raster.measure(geometry if geometry is not None else footprint)
            rows.append({"slump_id": track.id, "date": raster.date,
                         "area_m2": geometry.area if geometry is not None else 0.0,
                         "mean_prob": mean_prob if geometry is not None else float("nan"),
                         "valid_fraction": valid, "detected": geometry is not None,
                         "observed": valid >= min_valid,
                         "geometry": geometry if geometry is not None else footprint})
    columns = ["slump_id", "date", "area_m2", "mean_prob", "valid_fraction", "detected",
               "observed", "geometry"]
    return gpd.GeoDataFrame(rows, columns=columns, geometry="geometry", crs=crs)


def summarise(tracks: Sequence[Track], series: gpd.GeoDataFrame, step: float
              ) -> gpd.GeoDataFrame:
    """One row per slump: first/last seen, on how many dates it was detected (``n_detected``)
    and how many showed its footprint (``n_observed``, detected or not), areas, robust
    growth rate, boundary advance."""
    rows = []
    for track in tracks:
        part = series[(series["slump_id"] == track.id) & series["observed"]]
        seen = part[part["area_m2"] > 0]
        row = {"slump_id": track.id, "first_seen": min(track.geometries),
               "last_seen": max(track.geometries), "n_detected": len(track.geometries),
               "n_observed": len(part), "area_first_m2": float("nan"),
               "area_last_m2": float("nan"), "growth_m2_per_yr": float("nan"),
               "max_advance_m": float("nan"), "split_from": track.split_from,
               "merged_into": track.merged_into, "geometry": track.latest}
        if len(seen):
            first, last = seen.iloc[0], seen.iloc[-1]
            years = np.array([decimal_year(d) for d in part["date"]])
            row.update(area_first_m2=first["area_m2"], area_last_m2=last["area_m2"],
                       growth_m2_per_yr=theil_sen(years, part["area_m2"].to_numpy()),
                       max_advance_m=max_boundary_advance(first.geometry, last.geometry, step),
                       geometry=last.geometry)
        rows.append(row)
    frame = pd.DataFrame(rows)
    for column in ("split_from", "merged_into"):  # no parent / not merged: null, not NaN
        frame[column] = frame[column].astype("Int64")
    return gpd.GeoDataFrame(frame, geometry="geometry", crs=series.crs)
