"""``python -m rts_ssl predict model=<model dir | [a,b,c]> input=<scenes> output=<dir>``."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from rts_ssl.commands import hydra_main
from rts_ssl.data.scenes import find_scenes
from rts_ssl.data.stac import scenes_input
from rts_ssl.errors import InputError, some_failed
from rts_ssl.inference.predict import Prediction, predict_scenes

log = logging.getLogger(__name__)
LISTED = 20  # up to this many scenes, every output file is printed


def run(cfg: DictConfig) -> None:
    prediction = Prediction.from_config(cfg)
    output = Path(cfg.output)
    summary = predict_scenes(find_scenes(scenes_input(cfg.input, cfg.stac, output)), prediction,
                             output, cfg.overwrite, cfg.engine, cfg.ray)
    log.info("%d scenes mapped (%d now, %d already done), %d failed: %d slumps, %.0f m^2 -> %s",
             summary.done + summary.skipped, summary.done, summary.skipped,
             len(summary.failed), summary.slumps, summary.area_m2, cfg.output)
    if len(summary.results) <= LISTED:
        for result in summary.results:
            print(f"{result.scene}: {result.slumps} predicted slumps")
            for kind, path in zip(("probability", "polygons", "quicklook"), result.outputs,
                                  strict=True):
                print(f"  {kind:<12} {path}")
    if summary.failed:
        failure = some_failed(summary.failed, len(summary.failed) + summary.done + summary.skipped)
        if summary.done + summary.skipped == 0:  # nothing done: bad input
            raise InputError(cfg.input, str(failure))
        raise failure


if __name__ == "__main__":
    hydra_main("predict")
