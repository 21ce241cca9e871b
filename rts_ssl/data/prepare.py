"""Scenes (+ optional slump polygons) -> a tiled training set (see ``rts_ssl.data.tiles``).

Scenes are prepared in parallel, one shard each, written atomically; a scene whose shard
exists is skipped, so an interrupted run resumes. Tables and statistics are assembled last.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import re
import shutil
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio.windows
import shapely
import yaml
from rasterio.transform import array_bounds
from rasterio.warp import transform_bounds
from tqdm import tqdm

from rts_ssl.data.labels import (
    LabelIndex,
    RasterMask,
    find_mask,
    rasterize_polygons,
    read_polygons,
)
from rts_ssl.data.normalization import compute_band_stats
from rts_ssl.data.rasters import is_local
from rts_ssl.data.scenes import Scene, date_in, find_scenes, scene_options
from rts_ssl.data.tiles import (
    FORMAT,
    ShardWriter,
    TileStore,
    shard_is_complete,
    tile_starts,
    write_atomic,
)
from rts_ssl.errors import InputError

log = logging.getLogger(__name__)

SETTINGS_FILE = "prepare.json"


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


@dataclass
class PrepareSummary:
    output: Path
    tiles: int = 0
    prepared: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    dropped_nodata: int = 0

    def line(self) -> str:
        return (f"{self.tiles} tiles from {len(self.prepared) + len(self.skipped)} scenes "
                f"({len(self.prepared)} prepared, {len(self.skipped)} already done, "
                f"{len(self.failed)} failed; {self.dropped_nodata} mostly-nodata tiles dropped)"
                f" -> {self.output}")


def resolve_source(data: Mapping) -> dict:
    """The data config as a plain dict, with synthetic scenes generated on first use."""
    data = dict(data)
    if data.get("synthetic"):
        from rts_ssl.data.synthetic import ensure_synthetic  # only when configured

        ensure_synthetic(data["root"], **data["synthetic"])
    return data


def prepare_dataset(data: Mapping, output: str | Path, workers: int = 1,
                    overwrite: bool = False) -> PrepareSummary:
    """Tile every scene of the data config into ``output`` (a prepared dataset)."""
    data = resolve_source(data)
    output = Path(output)
    _claim_output(output, _settings(data), overwrite)
    jobs = _scene_jobs(data)
    summary = PrepareSummary(output)
    todo = []
    for job in jobs:
        if job.error:
            log.error("skipped %s", job.error)
            summary.failed[job.key] = job.error
        elif shard_is_complete(output, job.key):
            summary.skipped.append(job.key)
        else:
            todo.append(job)
    tiles_cfg = data["tiles"]
    context = multiprocessing.get_context("fork" if workers > 1 else None)
    with ProcessPoolExecutor(max(1, workers), mp_context=context) as pool:
        futures = {pool.submit(prepare_scene, job, output): job for job in todo}
        bar = tqdm(as_completed(futures), total=len(todo), desc="prepare scenes", unit="scene")
        for future in bar:
            job = futures[future]
            try:
                dropped = future.result()
            except InputError as err:
                log.error("skipped %s", err)
                summary.failed[job.key] = str(err)
                continue
            summary.prepared.append(job.key)
            summary.dropped_nodata += dropped
    done = [job for job in jobs if job.key not in summary.failed]
    if not done:
        first = next(iter(summary.failed.values()), "no scene")
        raise InputError(data.get("scenes"), f"no scene could be prepared; first error: {first}")
    summary.tiles = _assembled_count(output, done) or _assemble(output, data, done, tiles_cfg)
    return summary


def _assembled_count(output: Path, jobs: list[SceneJob]) -> int | None:
    """Tile count of an existing dataset.yaml made from exactly these shards, else None."""
    meta = output / "dataset.yaml"
    if not meta.is_file():
        return None
    info = yaml.safe_load(meta.read_text())
    same = [s["key"] for s in info.get("shards", [])] == [job.key for job in jobs]
    return int(info["n_tiles"]) if same else None


def prepare_scene(job: SceneJob, output: Path) -> int:
    """Write one scene's shard; returns the number of tiles dropped as mostly nodata."""
    data = job.options
    tiles = data["tiles"]
    size, overlap = int(tiles["size"]), int(tiles["overlap"])
    with Scene(job.path, data["bands"], **scene_options(data)) as scene:
        rows = tile_starts(scene.height, size, overlap) or [0]
        cols = tile_starts(scene.width, size, overlap) or [0]
        padding = 1 - min(scene.height, size) * min(scene.width, size) / size**2
        if padding > float(tiles["max_nodata_fraction"]):
            raise InputError(job.path, f"is {scene.width}x{scene.height} px, smaller than "
                             f"the tile size {size} (set data.tiles.size)")
        mask = (RasterMask(job.mask, scene, float(data.get("mask_threshold") or 0),
                           data.get("pixel_size_m")) if job.mask else None)
        writer = ShardWriter(output, job.key)
        try:
            dropped = _write_tiles(scene, job, writer, rows, cols, size, tiles, mask)
            writer.commit({"key": job.key, "scene": str(job.path)})
        except BaseException:
            writer.abort()
            raise
        finally:
            if mask is not None:
                mask.close()
    return dropped


def _read_strip(scene: Scene, raster_mask: RasterMask | None, row: int, size: int):
    """Pixels, nodata and mask planes of one tile row; a chip smaller than the tile is
    padded with nodata to the tile size."""
    height = min(size, scene.height - row)
    window = rasterio.windows.Window(0, row, scene.width, height)
    strip, nodata = scene.read(window)
    planes = raster_mask.read(window) if raster_mask is not None else None
    pad = ((0, size - height), (0, max(size - scene.width, 0)))
    if any(p for _, p in pad):
        strip = np.pad(strip, ((0, 0), *pad))
        nodata = np.pad(nodata, pad, constant_values=True)
        planes = None if planes is None else tuple(np.pad(p, pad) for p in planes)
    return strip, nodata, planes


def _write_tiles(scene: Scene, job: SceneJob, writer: ShardWriter, rows, cols, size,
                 tiles: Mapping, raster_mask: RasterMask | None = None) -> int:
    dropped = 0
    block = float(tiles["location_block_m"])
    polygons = job.polygons
    for row in rows:
        strip, strip_nodata, mask_strip = _read_strip(scene, raster_mask, row, size)
        for col in cols:
            nodata = strip_nodata[:, col:col + size]
            if nodata.mean() > float(tiles["max_nodata_fraction"]):
                dropped += 1
                continue
            transform = rasterio.windows.transform(
                rasterio.windows.Window(col, row, size, size), scene.transform)
            west, south, east, north = array_bounds(size, size, transform)
            if mask_strip is not None:
                mask, labelled = (plane[:, col:col + size] for plane in mask_strip)
            else:
                mask, labelled = _label_planes(job, polygons, (west, south, east, north),
                                               transform, size)
            ignore = nodata | ~labelled
            mask = mask & ~nodata
            cx, cy = (west + east) / 2, (south + north) / 2
            writer.append(strip[:, :, col:col + size],
                          np.stack([mask, ignore, nodata]).astype(np.uint8), {
                "tile_id": f"{job.key}/{row}_{col}", "scene": str(job.path),
                "image_id": job.image_id, "date": job.date, "region": job.region,
                "place": job.place,
                "location_id": f"{job.place}/{int(cx // block)}_{int(cy // block)}",
                "row": row, "col": col, "minx": west, "miny": south, "maxx": east,
                "maxy": north, "crs": scene.crs.to_string(),
                "positive_fraction": float(mask.mean()),
                "nodata_fraction": float(nodata.mean()),
                "labelled_fraction": float((~ignore).mean()),
            })
    return dropped


def _label_planes(job: SceneJob, polygons, bounds, transform, size):
    """Slump mask and labelled-area mask (booleans) of one tile."""
    shape = (size, size)
    if not job.labelled:
        return np.zeros(shape, bool), np.zeros(shape, bool)
    box = shapely.box(*bounds)
    hits = (polygons.sindex.query(box, predicate="intersects") if len(polygons)
            else np.zeros(0, int))
    mask = rasterize_polygons(polygons.geometry.values[np.sort(hits)], transform, shape) > 0
    if job.labelled_area is None:
        return mask, np.ones(shape, bool)
    return mask, rasterize_polygons([job.labelled_area], transform, shape) > 0


def _scene_jobs(data: Mapping) -> list[SceneJob]:
    """Scene metadata (date, region, place), keys and their labels, checked up front.

    ``data["sources"]`` (optional) pools several sources in one dataset: each entry
    overrides keys of the data config (scenes, pattern, offset, labels, ...) for its scenes.
    """
    sources = [{**data, **source} for source in data.get("sources") or [{}]]
    found = [find_scenes(source["scenes"]) for source in sources]
    common = Path(os.path.commonpath([str(p.parent.resolve()) for paths in found
                                      for p in paths]))
    jobs = []
    for source, paths in zip(sources, found, strict=True):
        source_jobs = [_scene_job(path, common, source, _scene_table(source))
                       for path in paths]
        if source.get("labels") and source.get("masks"):
            raise InputError("data", "set either labels (polygons) or masks (rasters), not both")
        if source.get("labels"):
            _attach_labels(source_jobs, source)
        if source.get("masks"):
            scenes_root = Path(os.path.commonpath([str(p.parent.resolve()) for p in paths]))
            _attach_masks(source_jobs, scenes_root, Path(source["masks"]))
        jobs += source_jobs
    _assign_places(jobs)
    return jobs


def _scene_job(path: Path, common: Path, source: dict, table: dict[str, dict]) -> SceneJob:
    """A scene's job: key, and region / place / date from the scene table, the path
    pattern, else the file (date) and ``data.region``."""
    rel = path.resolve().relative_to(common).as_posix()
    match = re.compile(source.get("pattern") or r"$^").search(path.resolve().as_posix())
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


def _attach_labels(jobs: list[SceneJob], data: Mapping) -> None:
    labels_path = data["labels"]
    polygons = read_polygons(labels_path, data.get("labels_layer"), data.get("pixel_size_m"))
    if polygons.empty:
        raise InputError(labels_path, "holds no polygons")
    footprints = None
    if data.get("footprints"):
        footprints = read_polygons(data["footprints"], data.get("footprints_layer"))
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
    if len(touched) < len(polygons):
        log.warning("%s: %d of %d polygons touch no scene and are not used", labels_path,
                    len(polygons) - len(touched), len(polygons))


def _settings(data: Mapping) -> dict:
    """What decides the tiles (unset keys left out, so new options keep old datasets valid)."""
    keys = ("scenes", "sensor", "bands", "band_names", "dem", "dem_radius_m", "labels", "masks",
            "labels_layer", "footprints", "footprints_layer", "id_column", "pattern", "region",
            "tiles", "auxiliary", "offset", "pixel_size_m", "mask_threshold", "scene_table",
            "scene_table_key", "sources", "nodata")
    return json.loads(json.dumps({k: data.get(k) for k in keys if data.get(k) is not None},
                                 default=str))


def _claim_output(output: Path, settings: dict, overwrite: bool) -> None:
    """Refuse to mix tiles prepared with different settings in one output directory."""
    marker = output / SETTINGS_FILE
    if output.exists() and overwrite:
        if not marker.exists() and any(output.iterdir()):
            raise InputError(output, "exists and is not a prepared dataset; not overwriting")
        shutil.rmtree(output)
    if marker.exists():
        found = {k: v for k, v in json.loads(marker.read_text()).items() if v is not None}
        if found != settings:
            raise InputError(output, "was prepared with other settings; use another output "
                             "or overwrite=true")
        return
    output.mkdir(parents=True, exist_ok=True)
    write_atomic(marker, lambda tmp: tmp.write_text(json.dumps(settings, indent=1)))


def _assemble(output: Path, data: Mapping, jobs: list[SceneJob], tiles_cfg: Mapping) -> int:
    """Merge shard tables, compute band statistics, write tiles.parquet + dataset.yaml."""
    shards = []
    tables = []
    for job in jobs:
        folder = output / "shards" / job.key
        shards.append({"key": job.key, **json.loads((folder / "shard.json").read_text())})
        tables.append(pd.read_parquet(folder / "tiles.parquet"))
    tiles = pd.concat(tables, ignore_index=True)
    if tiles.empty:
        raise InputError(output, "every tile was dropped as mostly nodata "
                         "(see data.tiles.max_nodata_fraction)")
    info = {
        "format": FORMAT, "name": data.get("name"), "sensor": data.get("sensor"),
        "bands": list(data["bands"]), "tile_size": int(tiles_cfg["size"]),
        "overlap": int(tiles_cfg["overlap"]), "mask_planes": ["mask", "ignore", "nodata"],
        "n_tiles": len(tiles), "n_scenes": len(jobs),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "shards": shards,
    }
    stats = compute_band_stats(TileStore(output, info, tiles))
    info["normalization"] = stats.to_dict()
    write_atomic(output / "tiles.parquet", lambda tmp: tiles.to_parquet(tmp, index=False))
    write_atomic(output / "dataset.yaml",
                 lambda tmp: tmp.write_text(yaml.safe_dump(info, sort_keys=False)))
    return len(tiles)
