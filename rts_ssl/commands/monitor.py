"""``python -m rts_ssl monitor model=<model> input=<scenes of one area> output=<dir>``."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from rts_ssl.commands import hydra_main
from rts_ssl.data.dates import scene_date
from rts_ssl.data.scenes import find_scenes
from rts_ssl.data.stac import scenes_input
from rts_ssl.errors import some_failed
from rts_ssl.inference.predict import Prediction
from rts_ssl.monitoring.monitor import check_dates, monitor


def run(cfg: DictConfig) -> None:
    paths = find_scenes(scenes_input(cfg.input, cfg.stac, Path(cfg.output)))
    scenes = [(scene_date(path, cfg.date_pattern), path) for path in paths]
    check_dates(scenes)
    result = monitor(scenes, Prediction.from_config(cfg), Path(cfg.output), cfg.overwrite,
                     cfg.min_overlap, cfg.max_nodata_fraction, cfg.cloud_band, cfg.engine,
                     cfg.ray)
    if result.failed:  # the other dates are monitored
        raise some_failed(result.failed, len(scenes))


if __name__ == "__main__":
    hydra_main("monitor")
