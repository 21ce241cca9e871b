"""One slump inventory from many ``predict`` output folders.

Every scene's polygons (``<stem>_slumps.gpkg``) in one table in a common CRS, with scene,
date, sensor, model and threshold; a slump seen in overlapping scenes of the same date is
one polygon (the union; the highest probability kept). Beside it, a STAC catalogue (pystac)
of the scenes' probability COGs, polygons and quicklooks, so maps open in QGIS or a STAC
browser.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pystac
import rasterio
import shapely
from pystac.extensions.projection import ProjectionExtension
from rasterio.warp import transform_bounds

from rts_ssl.errors import InputError
from rts_ssl.files import temporary_path, write_atomic
from rts_ssl.inference.predict import PROVENANCE_TAGS

SUFFIX = "_slumps.gpkg"
EQUAL_AREA = "EPSG:6931"  # EASE-Grid 2.0 North: areas of merged slumps in m^2
COLUMNS = ["scene", "date", "sensor", "model", "threshold", "area_m2", "mean_prob",
           "max_prob", "geometry"]


def find_predictions(folders: Sequence[str | Path]) -> list[Path]:
    """Every scene's polygon file below the ``predict`` output folders."""
    found = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise InputError(folder, "not a folder of predict outputs")
        found += sorted(folder.rglob(f"*{SUFFIX}"))
    if not found:
        raise InputError(", ".join(map(str, folders)), f"no predicted slumps (*{SUFFIX}) found")
    return found


def read_slumps(paths: Sequence[Path], crs: str) -> gpd.GeoDataFrame:
    """All scenes' polygons in ``crs``, one row per polygon."""
    frames = []
    for path in paths:
        try:
            frame = gpd.read_file(path, layer="slumps")
        except Exception as err:  # pyogrio raises several types for unreadable files
            raise InputError(path, f"cannot read slump polygons ({err})") from None
        for column in COLUMNS:
            if column not in frame:
                frame[column] = None  # maps of an older predict
        frames.append(frame[COLUMNS].to_crs(crs))
    return gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs=crs)


def merge_same_date(slumps: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """One polygon per group of intersecting polygons of the same date (from overlapping
    scenes): their union, the highest ``max_prob``, the area-weighted ``mean_prob``, the
    scenes joined; areas in an equal-area CRS."""
    slumps = slumps.reset_index(drop=True)
    group, groups = np.empty(len(slumps), dtype=int), 0
    for rows in slumps.groupby(slumps["date"].fillna("")).indices.values():
        shapes = slumps.geometry.values[rows]
        parts = shapely.get_parts(shapely.union_all(shapes))  # disjoint: one per slump
        found, part = shapely.STRtree(parts).query_nearest(shapely.point_on_surface(shapes),
                                                           all_matches=False)
        group[rows[found]] = groups + part
        groups += len(parts)
    slumps["group"] = group
    slumps["weighted_prob"] = slumps["mean_prob"].astype(float) * slumps["area_m2"].astype(float)
    joined = lambda values: ",".join(sorted({str(v) for v in values if v})) or None  # noqa: E731
    merged = slumps.dissolve(by="group", aggfunc={
        "scene": joined, "date": "first", "sensor": joined, "model": joined,
        "threshold": "max", "area_m2": "sum", "weighted_prob": "sum", "max_prob": "max"})
    merged["mean_prob"] = merged["weighted_prob"] / merged["area_m2"].replace(0, np.nan)
    merged["area_m2"] = merged.geometry.to_crs(EQUAL_AREA).area
    merged["scenes"] = slumps.groupby("group").size()
    return merged.reset_index(drop=True)[[*COLUMNS[:-1], "scenes", "geometry"]]


def write_inventory(slumps: gpd.GeoDataFrame, output: Path) -> list[Path]:
    """GeoParquet at ``output`` (``.parquet``) and the same table as GeoPackage beside it."""
    output.parent.mkdir(parents=True, exist_ok=True)
    parquet, gpkg = output.with_suffix(".parquet"), output.with_suffix(".gpkg")
    write_atomic(parquet, lambda tmp: slumps.to_parquet(tmp))
    write_atomic(gpkg, lambda tmp: slumps.to_file(tmp, driver="GPKG", layer="slumps"))
    return [parquet, gpkg]


def write_catalog(predictions: Sequence[Path], folder: Path) -> Path:
    """A self-contained STAC catalogue, one item per scene with its probability COG,
    polygons and quicklook as assets (hrefs relative to the catalogue)."""
    catalog = pystac.Catalog("rts_ssl-slumps", "Retrogressive thaw slump maps by rts_ssl")
    for polygons in predictions:
        catalog.add_item(_scene_item(polygons))
    tmp = temporary_path(folder)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        catalog.normalize_hrefs(str(tmp.resolve()) + os.sep)  # a folder, despite its suffix
        catalog.make_all_asset_hrefs_relative()
        catalog.save(pystac.CatalogType.SELF_CONTAINED)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder / "catalog.json"


def _scene_item(polygons: Path) -> pystac.Item:
    """The scene's maps; its date, sensor, model and threshold from the raster's tags."""
    stem = polygons.name.removesuffix(SUFFIX)
    probability = polygons.with_name(f"{stem}_probability.tif")
    if not probability.is_file():
        raise InputError(polygons, f"has no probability raster beside it ({probability.name})")
    with rasterio.open(probability) as src:
        bbox = list(transform_bounds(src.crs, "EPSG:4326", *src.bounds)) if src.crs else None
        epsg, shape, transform = (src.crs.to_epsg() if src.crs else None), src.shape, src.transform
        tags = {key: src.tags().get(tag) for key, tag in PROVENANCE_TAGS.items()}
    when = (dt.datetime.fromisoformat(tags["date"]).replace(tzinfo=dt.UTC) if tags["date"] else
            dt.datetime.fromtimestamp(probability.stat().st_mtime, dt.UTC))
    properties = {"rts_ssl:slumps": len(gpd.read_file(polygons, layer="slumps",
                                                      ignore_geometry=True)),
                  "rts_ssl:model": tags["model"], "rts_ssl:date_known": bool(tags["date"]),
                  "rts_ssl:threshold": float(tags["threshold"]) if tags["threshold"] else None}
    if tags["sensor"]:
        properties["platform"] = tags["sensor"]
    item = pystac.Item(stem, shapely.geometry.mapping(shapely.box(*bbox)) if bbox else None,
                       bbox, when, properties)
    projection = ProjectionExtension.ext(item, add_if_missing=True)
    projection.epsg, projection.shape = epsg, list(shape)
    projection.transform = list(transform)[:6]
    for key, path, media, role in (
            ("probability", probability, pystac.MediaType.COG, "data"),
            ("slumps", polygons, pystac.MediaType.GEOPACKAGE, "data"),
            ("quicklook", polygons.with_name(f"{stem}_quicklook.png"), pystac.MediaType.PNG,
             "overview")):
        if path.is_file():
            item.add_asset(key, pystac.Asset(str(path.resolve()), media_type=media, roles=[role]))
    return item
