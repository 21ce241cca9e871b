"""Predict scenes: probability COG, slump polygons (GeoPackage) and a quicklook per scene."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from contextlib import closing, nullcontext
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import rasterio.shutil
import torch
from omegaconf import OmegaConf
from rasterio.features import geometry_window, rasterize
from rasterio.windows import Window

from rts_ssl.data.grid_masks import GridMask
from rts_ssl.data.scenes import Scene
from rts_ssl.data.vectorise import StripPolygons
from rts_ssl.errors import InputError
from rts_ssl.files import remove_stale_temporaries, temporary_path, write_atomic
from rts_ssl.inference.engines import map_scenes
from rts_ssl.inference.ensemble import Ensemble, load_ensemble
from rts_ssl.inference.probability import NODATA, stored_at_least, stored_probabilities, to_uint8
from rts_ssl.inference.sliding import Windowing, predict_probabilities
from rts_ssl.quicklook import BlockMeans, render_quicklook

log = logging.getLogger(__name__)
STRIP = 1024  # rows vectorised at once
# In bytes: rasterio hands GDAL_CACHEMAX to GDALSetCacheMax (256 would mean 256 bytes).
GDAL_CACHE_BYTES = 64 * 2**20  # a block row of a 4-band uint16 scene 30,000 px wide
SENSOR_TAGS = ("SENSOR", "PLATFORM", "SPACECRAFT_NAME", "SATELLITE")  # of scenes
PROVENANCE_TAGS = {"date": "ACQUISITION_DATE", "sensor": "SENSOR", "model": "RTS_SSL_MODEL",
                   "threshold": "RTS_SSL_THRESHOLD"}  # of probability rasters


@dataclass
class Prediction:
    """Everything predicting a scene needs besides the scene itself.

    ``scene_options`` say how scenes are read (``Scene`` keywords: band names of files
    without descriptions, ``dem`` for terrain bands, ``auxiliary`` rasters (default: the
    pattern the models were trained with), ``offset``, ``pixel_size_m`` of chip images);
    ``exclude`` (a mask GeoTIFF or polygons, any CRS; ``exclude_layer`` of a multi-layer
    vector file) sets the probability to 0 inside it; smaller slumps than ``min_area_m2``
    are dropped.
    """

    ensemble: Ensemble
    windowing: Windowing
    device: str = "cpu"
    scene_options: dict = field(default_factory=dict)
    exclude: str | Path | None = None
    min_area_m2: float = 0.0
    exclude_layer: str | None = None

    def on_device(self, device: str) -> Prediction:
        """The same prediction with its models on ``device`` (a worker's own GPU)."""
        for model in self.ensemble.models:
            model.to(device)
        return replace(self, device=device)

    def open_scene(self, path: Path) -> Scene:
        """``path`` with the models' bands, read as the models were trained."""
        options = {"dem_radius_m": self.ensemble.dem_radius_m,
                   "auxiliary": self.ensemble.auxiliary,
                   "resolution_m": self.ensemble.resolution_m, **self.scene_options}
        return Scene(path, self.ensemble.bands, **options)

    @classmethod
    def from_config(cls, cfg) -> Prediction:
        """From a predict/evaluate/monitor config (``model``, ``threshold``, ``device``,
        ``window``, ``overlap``, ``batch_size``, ``band_names``, ``dem``, ``auxiliary``,
        ``offset``, ``nodata``, ``pixel_size_m``, ``exclude``, ``exclude_layer`` and
        ``min_area_m2``)."""
        device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
        checkpoint = cfg.model
        if not isinstance(checkpoint, str | Path | None):
            checkpoint = list(checkpoint)
        ensemble = load_ensemble(checkpoint, device)
        if cfg.get("threshold") is not None:  # a cut fitted to the region (evaluate thresholds=)
            ensemble = replace(ensemble, threshold=float(cfg.threshold))
        windowing = _windowing(ensemble.window_size(cfg.window), cfg.overlap, cfg.batch_size)
        band_names = cfg.get("band_names")
        options = {"band_names": list(band_names) if band_names else None, "dem": cfg.dem,
                   "offset": _plain(cfg.get("offset")), "nodata": cfg.get("nodata"),
                   "pixel_size_m": cfg.get("pixel_size_m")}
        if cfg.get("auxiliary") is not None:
            options["auxiliary"] = _plain(cfg.auxiliary)
        return cls(ensemble, windowing, device, options, cfg.get("exclude"),
                   float(cfg.get("min_area_m2") or 0.0), cfg.get("exclude_layer"))


def _windowing(size: int, overlap: int | None, batch: int) -> Windowing:
    """Windows of ``size`` px; the overlap defaults to a quarter of them, so a ViT's small
    input size (e.g. 64 px) gets a working default too."""
    overlap = size // 4 if overlap is None else int(overlap)
    if overlap >= size:
        raise InputError(f"overlap={overlap}", f"must be smaller than the window ({size} px)")
    return Windowing(size, overlap, batch)


def _plain(value):
    """A config node as plain Python (lists and dicts), other values unchanged."""
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


@dataclass
class SceneResult:
    scene: str
    slumps: int = 0
    area_m2: float = 0.0
    outputs: list[str] = field(default_factory=list)


@dataclass
class PredictionSummary:
    done: int = 0
    skipped: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    slumps: int = 0
    area_m2: float = 0.0
    results: list[SceneResult] = field(default_factory=list)


def predict_scenes(paths: Sequence[Path], prediction: Prediction, output: Path,
                   overwrite: bool = False, engine: str = "local",
                   ray_options: Mapping | None = None) -> PredictionSummary:
    """Predict each scene on ``engine`` (see :mod:`rts_ssl.inference.engines`); finished
    scenes are skipped unless ``overwrite`` (their results still count in the summary), and
    a scene that fails is reported and skipped without stopping the rest."""
    summary = PredictionSummary()
    if output.exists() and not output.is_dir():
        raise InputError(output, "exists and is not a directory (output= names the folder "
                         "for the maps)")
    output.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(output)
    results, todo = {}, []
    for path in paths:
        targets = outputs_for(path, output)
        if not overwrite and all(p.exists() for p in targets.values()):
            summary.skipped += 1
            results[path] = finished_scene(path, targets)
        else:
            todo.append(path)
    work = partial(predict_scene, output=output)
    for path, result in map_scenes(work, todo, prediction, engine, ray_options,
                                   desc="predict scenes"):
        if isinstance(result, InputError):
            log.error("failed %s", result)
            summary.failed[path.name] = str(result)
        else:
            summary.done += 1
            results[path] = result
    summary.results = [results[path] for path in paths if path in results]  # input order
    summary.slumps = sum(result.slumps for result in summary.results)
    summary.area_m2 = sum(result.area_m2 for result in summary.results)
    return summary


def finished_scene(path: Path, targets: dict[str, Path]) -> SceneResult:
    """The result of a scene predicted by an earlier run, read from its polygons."""
    slumps = gpd.read_file(targets["slumps"], layer="slumps", columns=["area_m2"])
    return SceneResult(path.name, len(slumps), float(slumps["area_m2"].sum()),
                       [str(p) for p in targets.values()])


def outputs_for(scene: Path, output: Path) -> dict[str, Path]:
    return {kind: output / f"{scene.stem}_{kind}.{ext}" for kind, ext in
            (("probability", "tif"), ("slumps", "gpkg"), ("quicklook", "png"))}


def bounded_gdal_cache() -> rasterio.Env:
    """GDAL keeps the blocks it reads and writes in a cache of 5 % of RAM by default, which
    would grow with the scene; scene-scale work runs inside this bound."""
    return rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES)


def predict_scene(path: Path, prediction: Prediction, output: Path) -> SceneResult:
    """All outputs of one scene, each written under a temporary name and renamed."""
    targets = outputs_for(path, output)
    output.mkdir(parents=True, exist_ok=True)
    ensemble = prediction.ensemble
    with bounded_gdal_cache():
        with prediction.open_scene(path) as scene:
            provenance = {"date": scene.acquisition_date(), "model": ensemble.model_id,
                          "sensor": next((scene.tags[tag] for tag in SENSOR_TAGS
                                          if scene.tags.get(tag)), None),
                          "threshold": ensemble.threshold}
            quicklook = BlockMeans.of_rgb_in(scene)  # gathered as prediction reads
            with (GridMask.from_file(prediction.exclude, scene, prediction.exclude_layer,
                                     "exclude_layer", same_grid=False, what="exclusion mask")
                  if prediction.exclude else nullcontext()) as exclusion:
                _write_probability(scene, ensemble, prediction.windowing,
                                   targets["probability"], prediction.device, exclusion,
                                   provenance, quicklook.add if quicklook else None)
        slumps = polygons_from_probability(targets["probability"], ensemble.threshold,
                                           prediction.min_area_m2)
        slumps = slumps.assign(scene=path.name, **provenance)
        write_atomic(targets["slumps"], lambda tmp: slumps.to_file(tmp, driver="GPKG",
                                                                    layer="slumps"))
        render_quicklook(path, targets["quicklook"], slumps, prediction.scene_options,
                         title=f"{path.stem}: {len(slumps)} predicted slumps",
                         blocks=quicklook)
    return SceneResult(path.name, len(slumps), float(slumps["area_m2"].sum()),
                       [str(p) for p in targets.values()])


def _write_probability(scene: Scene, ensemble: Ensemble, windowing: Windowing, target: Path,
                       device: str, exclusion: GridMask | None, provenance: dict,
                       on_rows=None) -> None:
    """Windowed writes into a tiled GeoTIFF, then a Cloud-Optimised copy with overviews;
    the ``provenance`` (date, sensor, model, threshold) in its tags (:data:`PROVENANCE_TAGS`)."""
    profile = dict(driver="GTiff", width=scene.width, height=scene.height, count=1,
                   dtype="uint8", nodata=NODATA, crs=scene.crs, transform=scene.transform,
                   tiled=True, blockxsize=256, blockysize=256, compress="deflate")
    staging = temporary_path(target, ".staging")  # tiled GeoTIFF, copied to a COG
    try:
        with rasterio.open(staging, "w", **profile) as dst:
            dst.update_tags(**{PROVENANCE_TAGS[key]: str(value)
                               for key, value in provenance.items() if value is not None})
            with closing(predict_probabilities(scene, ensemble.models, ensemble.stats,
                                               windowing, device, on_rows)) as strips:
                for top, rows in strips:  # closed before the scene, even on errors
                    if exclusion is not None:
                        rows[exclusion.strip(top, len(rows)) & ~np.isnan(rows)] = 0.0
                    dst.write(to_uint8(rows), 1, window=Window(0, top, scene.width, len(rows)))
        # the model is done by now: compression gets this worker's torch threads
        write_atomic(target, lambda tmp: rasterio.shutil.copy(
            staging, tmp, driver="COG", compress="DEFLATE", overview_resampling="average",
            num_threads=torch.get_num_threads()))
    finally:
        staging.unlink(missing_ok=True)


def polygons_from_probability(raster: Path, threshold: float,
                              min_area_m2: float = 0.0) -> gpd.GeoDataFrame:
    """One polygon per 8-connected region with probability >= threshold, with statistics.

    Vectorised in strips (bounded memory); parts cut by strip borders are merged again.
    """
    regions = StripPolygons()
    with rasterio.open(raster) as src:
        for top in range(0, src.height, STRIP):
            window = Window(0, top, src.width, min(STRIP, src.height - top))
            values = src.read(1, window=window)
            regions.add(stored_at_least(values, threshold), src.window_transform(window))
        rows = [_statistics(src, g) for g in regions.polygons()]
        crs = src.crs
    frame = gpd.GeoDataFrame(rows, geometry="geometry", crs=crs,
                             columns=["geometry", "area_m2", "mean_prob", "max_prob"])
    frame["area_m2"] = areas_m2(frame.geometry)
    return frame[frame["area_m2"] >= min_area_m2].reset_index(drop=True)


def areas_m2(geometries: gpd.GeoSeries) -> np.ndarray:
    """Areas in square metres (geographic coordinates measured in their UTM zone)."""
    if geometries.crs is not None and geometries.crs.is_geographic and len(geometries):
        geometries = geometries.to_crs(geometries.estimate_utm_crs())
    return geometries.area.to_numpy()


def _statistics(src, geometry) -> dict:
    window = geometry_window(src, [geometry])
    values = src.read(1, window=window)
    inside = rasterize([geometry], out_shape=values.shape,
                       transform=src.window_transform(window)) > 0
    probs = stored_probabilities(values[inside])
    return {"geometry": geometry, "area_m2": 0.0,
            "mean_prob": float(probs.mean()) if probs.size else float("nan"),
            "max_prob": float(probs.max()) if probs.size else float("nan")}
