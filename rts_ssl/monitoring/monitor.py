"""Monitor one area through time: predict every date, link slumps, fit their growth.

Outputs (in ``output``): ``dates/`` (each date's predict outputs), ``slumps_timeseries.gpkg``
(one row per slump and date), ``slumps.gpkg`` (one row per slump), ``timeseries.csv`` and
``timeseries.png``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import rasterio

from rts_ssl.data.terrain import METRES_PER_DEGREE_LON
from rts_ssl.errors import InputError
from rts_ssl.files import write_atomic
from rts_ssl.inference.predict import Prediction, outputs_for, predict_scenes
from rts_ssl.monitoring.date_rasters import DateRaster
from rts_ssl.monitoring.figures import render_timeseries
from rts_ssl.monitoring.linking import Track, link_tracks
from rts_ssl.monitoring.timeseries import observations, summarise

log = logging.getLogger(__name__)


@dataclass
class Monitoring:
    tracks: list[Track]
    series: gpd.GeoDataFrame  # one row per slump and date
    slumps: gpd.GeoDataFrame  # one row per slump
    failed: dict[str, str]    # scenes that could not be predicted, and why


def monitor(scenes: list[tuple[str, Path]], prediction: Prediction, output: Path,
            overwrite: bool = False, min_overlap: float = 0.1,
            max_nodata_fraction: float = 0.2, cloud_band: str | None = None,
            engine: str = "local", ray_options: Mapping | None = None) -> Monitoring:
    """Predict each ``(date, scene)``, link slumps across dates and write the time series."""
    check_dates(scenes)
    per_date = output / "dates"
    summary = predict_scenes([path for _, path in sorted(scenes)], prediction, per_date,
                             overwrite, engine, ray_options)
    crs, step = _monitoring_crs(min(scenes)[1])
    rasters, polygons = [], []
    for date, path in sorted(scenes):
        if path.name in summary.failed:
            continue
        files = outputs_for(path, per_date)
        rasters.append(DateRaster(date, files["probability"], crs, path, cloud_band))
        polygons.append((date, list(gpd.read_file(files["slumps"]).to_crs(crs).geometry)))
    if len(rasters) < 2:
        raise InputError(per_date, f"fewer than two dates could be predicted "
                         f"({len(summary.failed)} failed)")
    tracks = link_tracks(polygons, min_overlap)
    series = observations(tracks, rasters, 1.0 - max_nodata_fraction, crs)
    result = Monitoring(tracks, series, summarise(tracks, series, step), summary.failed)
    _write(output, result)
    log.info("%d dates, %d slumps tracked (%d splits, %d merges); %d slump-dates hidden by "
             "nodata/cloud, left out of the fits -> %s", len(rasters), len(tracks),
             sum(t.split_from is not None for t in tracks),
             sum(t.merged_into is not None for t in tracks),
             int((~series["observed"]).sum()), output)
    return result


def check_dates(scenes: list[tuple[str, Path]]) -> None:
    """One scene per date, and at least two dates."""
    dates = Counter(date for date, _ in scenes)
    repeated = sorted(p.name for d, p in scenes if dates[d] > 1)
    if repeated:
        raise InputError(repeated[0], f"shares its date with {', '.join(repeated[1:])}; "
                         "monitor takes one scene of one area per date")
    if len(dates) < 2:
        names = ", ".join(p.name for _, p in scenes)
        raise InputError(names or "input", "monitor needs scenes of at least two dates")


def _monitoring_crs(first_scene: Path):
    """The first scene's CRS (UTM if it is geographic) and its pixel size in metres."""
    with rasterio.open(first_scene) as src:
        if not src.crs.is_geographic:
            return src.crs, abs(src.transform.a) * src.crs.linear_units_factor[1]
        corner = gpd.GeoSeries.from_xy([src.bounds.left], [src.bounds.bottom], crs=src.crs)
        return corner.estimate_utm_crs(), abs(src.transform.a) * METRES_PER_DEGREE_LON


def _write(output: Path, result: Monitoring) -> None:
    series, slumps = result.series, result.slumps
    write_atomic(output / "slumps_timeseries.gpkg",
                 lambda tmp: series.to_file(tmp, driver="GPKG", layer="slumps_timeseries"))
    write_atomic(output / "slumps.gpkg",
                 lambda tmp: slumps.to_file(tmp, driver="GPKG", layer="slumps"))
    write_atomic(output / "timeseries.csv",
                 lambda tmp: series.drop(columns="geometry").to_csv(tmp, index=False))
    render_timeseries(series, output / "timeseries.png")
