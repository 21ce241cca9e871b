"""Scenes (+ optional slump polygons) -> a tiled training set (see ``rts_ssl.data.tiles``).

Scenes are prepared in parallel, one shard each, written atomically; a scene whose shard
exists is skipped, so an interrupted run resumes. Tables and statistics are assembled last.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import shutil
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio.windows
import shapely
import yaml
from rasterio.transform import array_bounds
from tqdm import tqdm

from rts_ssl.data.catalog import SceneJob, scene_jobs
from rts_ssl.data.grid_masks import GridMask
from rts_ssl.data.labels import rasterize_polygons
from rts_ssl.data.normalization import compute_band_stats
from rts_ssl.data.scenes import Scene, scene_options
from rts_ssl.data.tiles import (
    FORMAT,
    ShardWriter,
    TileStore,
    any_shard,
    shard_is_complete,
    tile_starts,
)
from rts_ssl.errors import InputError
from rts_ssl.files import exclusive, lock_beside, remove_stale_temporaries, write_atomic

log = logging.getLogger(__name__)

SETTINGS_FILE = "prepare.json"


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
    """Tile every scene of the data config into ``output`` (a prepared dataset); a run that
    fails before preparing anything leaves no new folder behind. Runs that prepare one
    output at once (a pretraining and a fine-tuning started together) take turns: the
    later one waits, then finds the scenes done."""
    data = resolve_source(data)
    output = Path(output)
    with exclusive(lock_beside(output), wait=True):
        created = not output.exists()
        try:
            return _prepare(data, output, workers, overwrite)
        except InputError:
            if created and not any_shard(output):
                shutil.rmtree(output, ignore_errors=True)
            raise


def _prepare(data: dict, output: Path, workers: int, overwrite: bool) -> PrepareSummary:
    jobs = scene_jobs(data)
    _claim_output(output, _settings(data), overwrite)
    for folder in (output, output / "shards"):
        remove_stale_temporaries(folder)
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
        mask = (GridMask(scene, job.mask, threshold=float(data.get("mask_threshold") or 0),
                         pixel_size_m=data.get("pixel_size_m")) if job.mask else None)
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


def _read_strip(scene: Scene, raster_mask: GridMask | None, row: int, size: int):
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
                 tiles: Mapping, raster_mask: GridMask | None = None) -> int:
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


def _settings(data: Mapping) -> dict:
    """What decides the tiles (unset keys left out, so new options keep old datasets valid)."""
    keys = ("scenes", "sensor", "bands", "band_names", "dem", "dem_radius_m", "labels", "masks",
            "labels_layer", "footprints", "footprints_layer", "id_column", "pattern", "region",
            "tiles", "auxiliary", "offset", "pixel_size_m", "mask_threshold", "scene_table",
            "scene_table_key", "sources", "nodata", "resolution_m")
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
        if found == settings:
            return
        if any_shard(output):
            raise InputError(output, "was prepared with other settings; use another output "
                             "or overwrite=true")
        log.info("%s: nothing was prepared with the earlier settings; starting anew", output)
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
