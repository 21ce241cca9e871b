"""``python -m rts_ssl prepare data=<config>``: scenes + polygons -> tiled training set."""

import logging

from omegaconf import DictConfig, OmegaConf

from rts_ssl.commands import hydra_main
from rts_ssl.data.prepare import prepare_dataset
from rts_ssl.errors import some_failed

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> None:
    data = OmegaConf.to_container(cfg.data, resolve=True)
    summary = prepare_dataset(data, data["prepared"], workers=cfg.workers,
                              overwrite=cfg.overwrite)
    for key, error in summary.failed.items():
        log.error("failed %s: %s", key, error)
    log.info("prepared %s", summary.line())
    if summary.failed:  # the others are prepared
        raise some_failed(summary.failed, len(summary.failed) + len(summary.prepared)
                          + len(summary.skipped))


if __name__ == "__main__":
    hydra_main("prepare")
