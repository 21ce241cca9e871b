"""Scene-level evaluation: a model's prediction against a reference mask or polygons.

Streams the scene strip by strip (the prediction path of ``predict``), accumulating pixel
statistics (torchmetrics) and polygons of predicted and reference slumps, which are matched
one to one at the end (the object metrics of fine-tuning).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import torch
from rasterio.windows import Window
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryPrecisionRecallCurve

from rts_ssl.data.grid_masks import GridMask
from rts_ssl.data.labels import LabelIndex, find_mask, read_polygons
from rts_ssl.data.scenes import CHIP_SUFFIXES, GEOTIFF_SUFFIXES
from rts_ssl.data.vectorise import StripPolygons
from rts_ssl.errors import InputError
from rts_ssl.evaluation.metrics import ObjectCounts, pixel_metrics, threshold_sweep, with_ignore
from rts_ssl.inference.predict import Prediction, areas_m2, bounded_gdal_cache
from rts_ssl.inference.sliding import predict_probabilities

# pixel metrics, object counts and the threshold sweep (None without thresholds) of a scene
SceneMetrics = tuple[MetricCollection, ObjectCounts, BinaryPrecisionRecallCurve | None]


def evaluate_scene(pair: tuple[Path, Path], prediction: Prediction,
                   labels: LabelIndex | None = None, iou_threshold: float = 0.3,
                   mask_threshold: float = 0,
                   thresholds: Sequence[float] = ()) -> SceneMetrics:
    """Pixel metrics, ObjectCounts and the pixel counts at each of ``thresholds`` of one
    (scene, reference) pair (:func:`pair_scenes`).

    Raster references count values above ``mask_threshold`` as slump (JPEG masks: 127).
    Predicted slumps smaller than the prediction's ``min_area_m2`` are not objects, as
    ``predict`` drops them; pixel metrics are those of the probability raster."""
    scene_path, reference = pair
    pixels, objects, sweep = pixel_metrics(), ObjectCounts(iou_threshold), None
    if thresholds:
        sweep = threshold_sweep(thresholds)
    predicted, expected = StripPolygons(), StripPolygons()
    ensemble = prediction.ensemble
    pixel_size_m = prediction.scene_options.get("pixel_size_m")
    with bounded_gdal_cache(), prediction.open_scene(scene_path) as scene:
        ref = (GridMask(scene, polygons=labels.for_scene(scene.path.stem, tuple(scene.bounds),
                                                         scene.crs)[0])
               if labels is not None else
               GridMask(scene, reference, threshold=mask_threshold, pixel_size_m=pixel_size_m))
        pixel_km2 = abs(scene.transform.a * scene.transform.e) / 1e6
        area = 0.0
        with closing(predict_probabilities(scene, ensemble.models, ensemble.stats,
                                           prediction.windowing, prediction.device)) as strips:
            for top, prob in strips:  # closed before the scene, even on errors
                valid = ~np.isnan(prob)
                filled = np.nan_to_num(prob)
                pred = filled >= ensemble.threshold
                truth = ref.strip(top, len(prob))
                args = (torch.from_numpy(pred & valid).long(),
                        with_ignore(torch.from_numpy(truth), torch.from_numpy(~valid)))
                pixels.update(*args)
                if sweep is not None:
                    sweep.update(torch.from_numpy(filled), args[1])
                transform = rasterio.windows.transform(Window(0, top, scene.width, len(prob)),
                                                       scene.transform)
                predicted.add(pred & valid, transform)
                expected.add(truth & valid, transform)
                area += valid.sum() * pixel_km2
        ref.close()
        crs = scene.crs
    predicted, expected = predicted.polygons(), expected.polygons()
    if prediction.min_area_m2 and predicted:
        predicted = gpd.GeoSeries(predicted, crs=crs)
        predicted = list(predicted[areas_m2(predicted) >= prediction.min_area_m2])
    objects.update(predicted, expected, area)
    return pixels, objects, sweep


def pair_scenes(scenes: list[Path], mask: Path) -> list[tuple[Path, Path]]:
    """(scene, reference) pairs: one vector file for all, or masks named after the scenes
    (``<stem>_mask.tif`` in folders mirroring the scenes', see ``find_mask``)."""
    if mask.is_file():
        return [(scene, mask) for scene in scenes]
    root = Path(os.path.commonpath([os.path.abspath(scene.parent) for scene in scenes]))
    pairs = []
    for scene in scenes:
        found = find_mask(scene, root, mask)
        if found is None:
            raise InputError(scene, f"no reference mask named like it under {mask}")
        pairs.append((scene, found))
    return pairs


def load_labels(mask: Path, layer: str | None = None,
                pixel_size_m: float | None = None) -> LabelIndex | None:
    """Polygons when the reference is a vector (or COCO) file, else None (raster masks)."""
    if mask.is_file() and mask.suffix.lower() not in (*GEOTIFF_SUFFIXES, *CHIP_SUFFIXES):
        return LabelIndex(read_polygons(mask, layer, pixel_size_m, layer_option="masks_layer"))
    return None


def pool(pooled: SceneMetrics | None, scene: SceneMetrics) -> SceneMetrics:
    """The pooled metrics with one more scene's states added (scenes may come from other
    processes: Ray workers); the first scene's metrics are copied to start the pool."""
    if pooled is None:
        return copy.deepcopy(scene)
    for name, metric in pooled[0].items():
        metric.merge_state(scene[0][name])
    for metric, other in zip(pooled[1:], scene[1:], strict=True):
        if metric is not None:
            metric.merge_state(other)
    return pooled
