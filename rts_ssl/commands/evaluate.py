"""``python -m rts_ssl evaluate model=<model> input=<scenes> masks=<masks | polygons>``."""

from __future__ import annotations

import json
import logging
from functools import partial
from pathlib import Path

from omegaconf import DictConfig

from rts_ssl.commands import hydra_main
from rts_ssl.data.scenes import find_scenes
from rts_ssl.data.stac import scenes_input
from rts_ssl.errors import InputError
from rts_ssl.evaluation.metrics import ObjectCounts, sweep_summary
from rts_ssl.files import write_atomic
from rts_ssl.inference.engines import map_scenes
from rts_ssl.inference.evaluate import evaluate_scene, load_labels, pair_scenes, pool
from rts_ssl.inference.predict import Prediction

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> None:
    prediction = Prediction.from_config(cfg)
    mask = Path(cfg.masks)
    scenes = find_scenes(scenes_input(cfg.input, cfg.stac, Path(cfg.output).parent))
    pairs = pair_scenes(scenes, mask)
    labels = load_labels(mask, cfg.masks_layer, prediction.scene_options.get("pixel_size_m"))
    pooled, per_scene = None, {}
    thresholds = list(cfg.thresholds or [])
    work = partial(evaluate_scene, labels=labels, iou_threshold=cfg.iou_threshold,
                   mask_threshold=cfg.mask_threshold, thresholds=thresholds)
    for (scene, _), metrics in map_scenes(work, pairs, prediction, cfg.engine, cfg.ray,
                                          desc="evaluate scenes"):
        if isinstance(metrics, InputError):
            raise metrics
        pooled = pool(pooled, metrics)
        per_scene[scene.name] = _summary(*metrics[:2])
    per_scene = {scene.name: per_scene[scene.name] for scene, _ in pairs}  # input order
    result = {"pooled": _summary(*pooled[:2]), "scenes": per_scene,
              "threshold": prediction.ensemble.threshold, "iou_threshold": cfg.iou_threshold}
    if thresholds:
        result["threshold_sweep"] = sweep_summary(pooled[2])
    output = Path(cfg.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(output, lambda tmp: tmp.write_text(json.dumps(result, indent=1)))
    for name, metrics in [*per_scene.items(), ("POOLED", result["pooled"])]:
        print(f"{name:<40} {_line(metrics)}")
    if thresholds:
        _print_sweep(result["threshold_sweep"], prediction.ensemble.threshold)
    log.info("evaluation of %d scenes -> %s", len(pairs), output)


def _print_sweep(rows: list[dict], threshold: float) -> None:
    """The pooled pixel metrics per cut, the best IoU marked."""
    best = max(rows, key=lambda row: row["iou"])
    print(f"pooled pixel metrics per threshold (this run's: {threshold:.3f}; * best IoU)")
    for row in rows:
        print(f"{'*' if row is best else ' '} {_line(row)}")


def _line(metrics: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.3f}" for k, v in metrics.items())


def _summary(pixels, objects: ObjectCounts) -> dict[str, float]:
    return {**{k: float(v) for k, v in pixels.compute().items()}, **objects.compute()}


if __name__ == "__main__":
    hydra_main("evaluate")
