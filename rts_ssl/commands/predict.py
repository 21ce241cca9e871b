"""``python -m rts_ssl predict checkpoint=<model dir | [a,b,c]> input=<scenes> output=<dir>``."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig
from tqdm import tqdm

from rts_ssl.data.scenes import find_scenes
from rts_ssl.errors import InputError
from rts_ssl.inference.predict import outputs_for, predict_scene, prediction_setup

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> None:
    ensemble, windowing, device = prediction_setup(cfg)
    scenes = find_scenes(cfg.input)
    output = Path(cfg.output)
    output.mkdir(parents=True, exist_ok=True)
    done, skipped, failed, slumps, area = 0, 0, {}, 0, 0.0
    for path in tqdm(scenes, desc="predict scenes", unit="scene"):
        if not cfg.overwrite and all(p.exists() for p in outputs_for(path, output).values()):
            skipped += 1
            continue
        try:
            result = predict_scene(path, ensemble, output, windowing,
                                   list(cfg.bands) if cfg.bands else None, cfg.min_area_m2,
                                   device, cfg.exclude, cfg.dem)
        except InputError as err:
            log.error("failed %s", err)
            failed[path.name] = str(err)
            continue
        done += 1
        slumps += result.slumps
        area += result.area_m2
    log.info("predicted %d scenes (%d already done, %d failed): %d slumps, %.0f m^2 -> %s",
             done, skipped, len(failed), slumps, area, output)
