"""Slump polygons from any vector format and CRS, matched and rasterised onto scene grids.

Reads GeoPackage, shapefile, (nested) zipped shapefiles, GeoJSON and KML/KMZ through GDAL
(pyogrio). Geometries are flattened to 2D, repaired with ``make_valid`` and split into single
polygons; empty and non-polygon geometries are dropped with a count in the log.
"""

from __future__ import annotations

import logging
import os
import warnings
import zipfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from pyproj import CRS
from rasterio.features import rasterize

from rts_ssl.data.coco import coco_polygons, load_coco
from rts_ssl.errors import InputError

log = logging.getLogger(__name__)

VECTOR_SUFFIXES = (".gpkg", ".shp", ".geojson", ".json", ".kml", ".kmz", ".fgb")
POLYGON_TYPES = ("Polygon",)


def vector_sources(path: str | Path) -> list[str]:
    """GDAL paths of every vector dataset in ``path``; a zip may hold several, or more zips."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "label file not found")
    if path.suffix.lower() != ".zip":
        return [str(path)]
    try:
        with zipfile.ZipFile(path) as archive:
            sources = _zip_sources(archive, f"/vsizip/{path}")
    except zipfile.BadZipFile:
        raise InputError(path, "not a readable zip archive") from None
    if not sources:
        raise InputError(path, "zip archive holds no vector file (.shp, .gpkg, .geojson, ...)")
    return sources


def _zip_sources(archive: zipfile.ZipFile, prefix: str) -> list[str]:
    sources = []
    for name in archive.namelist():
        if "__MACOSX" in name or Path(name).name.startswith("._"):
            continue
        suffix = Path(name).suffix.lower()
        if suffix in VECTOR_SUFFIXES:
            sources.append(f"{prefix}/{name}")
        elif suffix == ".zip":
            with zipfile.ZipFile(archive.open(name)) as inner:
                sources += _zip_sources(inner, f"/vsizip/{{{prefix}/{name}}}")
    return sources


def read_polygons(path: str | Path, layer: str | None = None,
                  pixel_size_m: float | None = None,
                  layer_option: str = "the layer") -> gpd.GeoDataFrame:
    """All polygons in a vector file (or zip of them), cleaned, in the first source's CRS.

    Columns are kept; a ``source`` column says which file (and layer) each row came from.
    A multi-layer file needs ``layer`` (given by the user as ``layer_option``, which its
    error names): merging e.g. slumps with look-alikes would be wrong.
    A COCO annotation file gives the polygons of chip images on their local pixel grid
    (``pixel_size_m`` metres per pixel).
    """
    coco = load_coco(path) if Path(path).is_file() else None
    if coco is not None:
        frame = coco_polygons(coco, path, pixel_size_m).assign(source=str(path))
        return clean_polygons(frame, path)
    frames = [_read_source(path, source, layer, layer_option) for source in vector_sources(path)]
    crs = frames[0].crs
    merged = pd.concat([f.to_crs(crs) for f in frames], ignore_index=True)
    return clean_polygons(gpd.GeoDataFrame(merged, geometry="geometry", crs=crs), path)


def _read_source(path: str | Path, source: str, layer: str | None,
                 layer_option: str) -> gpd.GeoDataFrame:
    label = source.replace(f"/vsizip/{path}", str(path)) if source != str(path) else str(path)
    try:
        layers = [name for name, _ in pyogrio.list_layers(source)]
    except Exception as err:  # pyogrio raises several DataSourceError subclasses
        raise InputError(label, f"not a readable vector file ({_one_line(err)})") from None
    if layer is None and len(layers) > 1:
        raise InputError(label, f"has {len(layers)} layers ({', '.join(layers)}); "
                         f"set {layer_option}")
    chosen = layer if layer is not None else layers[0]
    if chosen not in layers:
        raise InputError(label, f"has no layer {chosen!r} (layers: {', '.join(layers)})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # GDAL notes about field types
        frame = gpd.read_file(source, layer=chosen, engine="pyogrio")
    if frame.crs is None:
        raise InputError(label, "polygons have no CRS (missing .prj?); assign one")
    if CRS(frame.crs).is_geocentric:
        raise InputError(label, f"geocentric CRS {frame.crs.to_string()} has no 2D map position")
    frame["source"] = label if len(layers) == 1 else f"{label}:{chosen}"
    return frame


def clean_polygons(frame: gpd.GeoDataFrame, source: str | Path) -> gpd.GeoDataFrame:
    """2D, valid, non-empty single polygons; logs how many rows were repaired or dropped."""
    geoms = frame.geometry.values
    missing = np.asarray(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    frame = frame.loc[~missing].copy()
    geoms = shapely.force_2d(frame.geometry.values)
    invalid = ~shapely.is_valid(geoms)
    geoms[invalid] = shapely.make_valid(geoms[invalid])
    frame = frame.set_geometry(geoms).explode(index_parts=False)
    polygon = frame.geom_type.isin(POLYGON_TYPES).to_numpy() & (
        shapely.area(frame.geometry.to_numpy()) > 0)
    dropped_types = frame.loc[~polygon].geom_type.value_counts().to_dict()
    frame = frame.loc[polygon].reset_index(drop=True)
    log.info(
        "%s: %d polygons (repaired %d invalid; dropped %d empty and %s non-polygon parts)",
        source, len(frame), int(invalid.sum()), int(missing.sum()), dropped_types or 0,
    )
    return frame


class LabelIndex:
    """Finds the polygons (and labelled footprint) of a scene.

    By ``image_id`` when the label file has that column (the ML_training_labels
    convention: a scene absent from the labels has no slumps), else by intersection with
    the scene. Footprints, when given, bound the labelled area; outside it is ignored.
    """

    def __init__(
        self,
        polygons: gpd.GeoDataFrame,
        footprints: gpd.GeoDataFrame | None = None,
        id_column: str = "image_id",
    ) -> None:
        self.polygons = polygons.assign(label_index=np.arange(len(polygons)))
        self.footprints = footprints
        self.id_column = id_column

    def for_scene(self, image_id: str, bounds: tuple, crs) -> tuple[gpd.GeoDataFrame, object]:
        """Polygons in the scene CRS, and the labelled-area geometry (None = whole scene)."""
        polys = self._select(self.polygons, image_id, bounds, crs)
        if self.footprints is None:
            return polys, None
        area = self._select(self.footprints, image_id, bounds, crs)
        return polys, shapely.union_all(area.geometry.values)

    def _select(self, frame: gpd.GeoDataFrame, image_id: str, bounds, crs) -> gpd.GeoDataFrame:
        if self.id_column in frame.columns:
            frame = frame.loc[frame[self.id_column].astype(str) == str(image_id)]
            return frame.to_crs(crs)
        box = gpd.GeoSeries([shapely.box(*bounds)], crs=crs).to_crs(frame.crs)
        hits = frame.sindex.query(box.iloc[0], predicate="intersects")
        return frame.iloc[np.sort(hits)].to_crs(crs)


def rasterize_polygons(geoms, transform, shape: tuple[int, int]) -> np.ndarray:
    """Binary uint8 mask of ``geoms`` on a window grid (pixel centres inside polygons)."""
    geoms = [g for g in geoms if g is not None and not g.is_empty]
    if not geoms:
        return np.zeros(shape, np.uint8)
    return rasterize(geoms, out_shape=shape, transform=transform, fill=0, default_value=1,
                     dtype=np.uint8)


def _one_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def find_mask(scene: Path, scenes_root: Path, masks_root: Path) -> Path | None:
    """A scene's raster mask: ``<stem>_mask.tif`` (or the scene's own name) in the folder
    mirroring the scene's under ``masks_root``, or named like the scene's last folders
    (``masks/<site>/`` for ``input=scenes/<site>``), else directly in ``masks_root``.
    Paths are taken as given: a scene reached through a symbolic link is where the link is."""
    scene_folder = Path(os.path.abspath(scene.parent))
    relative = scene_folder.relative_to(os.path.abspath(scenes_root))
    tails = [Path(*scene_folder.parts[-k:]) for k in range(1, len(scene_folder.parts))]
    for folder in (masks_root / relative, *(masks_root / tail for tail in tails), masks_root):
        for name in (f"{scene.stem}_mask.tif", f"{scene.stem}_mask.tiff",
                     f"{scene.stem}_mask{scene.suffix}", scene.name):
            if (folder / name).is_file():
                return folder / name
    return None
