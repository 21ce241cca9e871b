"""Which scenes a data config names, and what is known of each before tiling.

Every scene becomes a :class:`SceneJob`: a unique key, region / place / date (scene table,
path pattern, metadata), its grid and its labels (polygons in the scene's CRS, or a raster
mask). Places group scenes of one piece of ground so splits never cut through it. All of
it is checked up front, so a bad label file stops ``prepare`` before any tile is written.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import pandas as pd
import shapely
from rasterio.warp import transform_bounds

from rts_ssl.data.dates import date_in
from rts_ssl.data.labels import LabelIndex, find_mask, read_polygons
from rts_ssl.data.rasters import is_local
from rts_ssl.data.scenes import Scene, find_scenes, scene_options
from rts_ssl.errors import InputError

log = logging.getLogger(__name__)


@dataclass
class SceneJob:
    """Everything one worker needs to tile one scene (polygons already in the scene CRS)."""

    path: Path
    key: str
    image_id: str
    date: str | None
    region: str
    place: str
    polygons: gpd.GeoDataFrame | None = None
    labelled_area: object = None  # geometry; None = whole scene (when labelled)
    labelled: bool = False
    mask: Path | None = None  # a raster slump mask on the scene's grid (instead of polygons)
    crs: object = None
    bounds: tuple = ()
    error: str | None = None  # why the scene header could not be read
    options: dict = field(default_factory=dict)  # the data config of the scene's source


def scene_jobs(data: Mapping) -> list[SceneJob]:
    """Scene metadata (date, region, place), keys and their labels, checked up front.

    ``data["sources"]`` (optional) pools several sources in one dataset: each entry
    overrides keys of the data config (scenes, pattern, offset, labels, ...) for its scenes.
    """
    sources = [{**data, **source} for source in data.get("sources") or [{}]]
    found = [find_scenes(source["scenes"]) for source in sources]
    common = Path(os.path.commonpath([os.path.abspath(p.parent) for paths in found
                                      for p in paths]))
    jobs = []
    used: dict[str, tuple[set[int], int]] = {}  # label file: polygons used, polygons in it
    for source, paths in zip(sources, found, strict=True):
        source_jobs = [_scene_job(path, common, source, _scene_table(source))
                       for path in paths]
        if source.get("labels") and source.get("masks"):
            raise InputError("data", "set either labels (polygons) or masks (rasters), not both")
        if source.get("labels"):
            touched, total = _attach_labels(source_jobs, source)
            used.setdefault(str(source["labels"]), (set(), total))[0].update(touched)
        if source.get("masks"):
            scenes_root = Path(os.path.commonpath([os.path.abspath(p.parent) for p in paths]))
            _attach_masks(source_jobs, scenes_root, Path(source["masks"]))
        jobs += source_jobs
    for labels_path, (touched, total) in used.items():  # sources may share a label file
        if len(touched) < total:
            log.warning("%s: %d of %d polygons touch no scene and are not used", labels_path,
                        total - len(touched), total)
    _assign_places(jobs)
    return jobs


def _scene_job(path: Path, common: Path, source: dict, table: dict[str, dict]) -> SceneJob:
    """A scene's job: key, and region / place / date from the scene table, the path
    pattern, else the file (date) and ``data.region``."""
    absolute = Path(os.path.abspath(path))  # a symbolic link is the path it is
    rel = absolute.relative_to(common).as_posix()
    match = re.compile(source.get("pattern") or r"$^").search(absolute.as_posix())
    groups = {k: v for k, v in (match.groupdict() if match else {}).items() if v}
    groups |= {k: str(v) for k, v in table.get(path.stem, {}).items() if pd.notna(v)}
    key = re.sub(r"[^A-Za-z0-9._-]+", "_", rel.rsplit(".", 1)[0].replace("/", "__"))
    job = SceneJob(path=path, key=key, image_id=groups.get("image_id", path.stem),
                   date=date_in(groups.get("date")),
                   region=groups.get("region") or source.get("region") or "default",
                   place=groups.get("location", ""), options=source)
    try:
        with Scene(path, source["bands"], **scene_options(source)) as scene:
            job.crs, job.bounds = scene.crs, tuple(scene.bounds)
            job.date = job.date or scene.acquisition_date()
    except InputError as err:
        job.error = str(err)
    return job


def _scene_table(source: Mapping) -> dict[str, dict]:
    """Per-scene attributes (region, location, date) from ``scene_table``, a CSV keyed by
    the scene's file stem in column ``scene_table_key``."""
    path = source.get("scene_table")
    if not path:
        return {}
    key = source.get("scene_table_key") or "scene"
    try:
        table = pd.read_csv(path, dtype=str)
    except (OSError, ValueError) as err:
        raise InputError(path, f"not a readable CSV scene table ({err})") from None
    if key not in table.columns:
        raise InputError(path, f"has no column {key!r} (data.scene_table_key; columns: "
                         f"{', '.join(table.columns)})")
    columns = [c for c in ("region", "location", "date") if c in table.columns]
    table = table[[key, *columns]].drop_duplicates()
    repeated = table[key][table[key].duplicated()]
    if len(repeated):
        raise InputError(path, f"lists scene {repeated.iloc[0]} twice with different "
                         f"{', '.join(columns)}")
    return table.set_index(key).to_dict("index")


def _assign_places(jobs: list[SceneJob]) -> None:
    """Scenes without a location from the pattern: overlapping footprints = one place."""
    unplaced = [job for job in jobs if not job.place and not job.error]
    for job in [job for job in unplaced if is_local(job.crs)]:
        job.place = job.image_id  # chips on local grids: each is its own place
    unplaced = [job for job in unplaced if not job.place]
    if not unplaced:
        return
    boxes = [shapely.box(*transform_bounds(job.crs, "EPSG:4326", *job.bounds))
             for job in unplaced]
    parent = list(range(len(unplaced)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    tree = shapely.STRtree(boxes)
    for i, j in zip(*tree.query(boxes, predicate="intersects"), strict=True):
        parent[find(int(i))] = find(int(j))
    for i, job in enumerate(unplaced):
        job.place = unplaced[find(i)].image_id


def _attach_masks(jobs: list[SceneJob], scenes_root: Path, masks_root: Path) -> None:
    """Raster masks named after their scenes; scenes without one stay unlabelled."""
    readable = [job for job in jobs if not job.error]
    for job in readable:
        job.mask = find_mask(job.path, scenes_root, masks_root)
        job.labelled = job.mask is not None
    if readable and not any(job.labelled for job in readable):
        raise InputError(masks_root, "holds no mask named like a scene (<scene>_mask.tif)")


def _attach_labels(jobs: list[SceneJob], data: Mapping) -> tuple[set[int], int]:
    """Each scene's polygons; returns which of the file's polygons (by row) touched a scene,
    and how many it holds."""
    labels_path = data["labels"]
    polygons = read_polygons(labels_path, data.get("labels_layer"), data.get("pixel_size_m"),
                             layer_option="data.labels_layer")
    if polygons.empty:
        raise InputError(labels_path, "holds no polygons")
    footprints = None
    if data.get("footprints"):
        footprints = read_polygons(data["footprints"], data.get("footprints_layer"),
                                   layer_option="data.footprints_layer")
    index = LabelIndex(polygons, footprints, data.get("id_column") or "image_id")
    touched: set[int] = set()
    readable = [job for job in jobs if not job.error]
    for job in readable:
        polys, area = index.for_scene(job.image_id, job.bounds, job.crs)
        polys = polys.loc[polys.intersects(shapely.box(*job.bounds))]
        touched.update(polys["label_index"].tolist())
        job.polygons = polys[["label_index", "geometry"]].reset_index(drop=True)
        job.labelled_area = area
        job.labelled = True
    if readable and not touched:
        raise InputError(labels_path, f"none of its {len(polygons)} polygons touches a scene "
                         "(wrong CRS, image_id or scenes?)")
    return touched, len(polygons)
