"""``python -m rts_ssl pretrain [-m] ssl=<simclr|mae> encoder=<name> data=<config>``."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from rts_ssl import tracking
from rts_ssl.commands import claimed, hydra_main
from rts_ssl.data.datamodule import TileDataModule
from rts_ssl.models.export import ENCODER, description_file, export_encoder
from rts_ssl.training import best_or_last, build_trainer, resume_checkpoint

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> None:
    """Pretrain in the run directory, unless its encoder is exported there already (an
    experiment's recipes each have one folder) or another run holds it (:func:`claimed`)."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    with claimed(run_dir, description_file(run_dir / ENCODER), cfg.overwrite) as ours:
        if ours:
            _pretrain(cfg, run_dir)


def _pretrain(cfg: DictConfig, run_dir: Path) -> None:
    pl.seed_everything(cfg.seed, workers=True)
    name = tracking.run_name(cfg.ssl.name, cfg.encoder.name, cfg.data.name)
    data = OmegaConf.to_container(cfg.data, resolve=True)
    datamodule = TileDataModule(data, batch_size=cfg.batch_size, num_workers=cfg.num_workers,
                                crop_size=cfg.input_size, split=cfg.split,
                                eval_crop_size=cfg.input_size,
                                samples_per_epoch=cfg.samples_per_epoch,
                                temporal_positives=cfg.ssl.temporal_positives)
    encoder = {**OmegaConf.to_container(cfg.encoder), "in_chans": len(data["bands"]),
               "input_size": cfg.input_size}
    task = hydra.utils.instantiate(cfg.ssl.task, encoder=encoder, _convert_="all",
                                   optimizer=OmegaConf.to_container(cfg.ssl.optimizer))
    logger = tracking.make_logger(cfg.logger, run_dir, name, group=f"pretrain-{cfg.data.name}",
                                  job_type="pretrain",
                                  config=OmegaConf.to_container(cfg, resolve=True))
    summary = None
    try:
        trainer = build_trainer(cfg.trainer, cfg.callbacks, run_dir, logger)
        resume = resume_checkpoint(cfg.resume, Path(cfg.runs_dir), run_dir)
        trainer.fit(task, datamodule=datamodule, ckpt_path=resume)
        if trainer.is_global_zero:
            encoder_dir = _export(trainer, task, datamodule, cfg, run_dir, logger, name)
            summary = f"encoder: {encoder_dir}\nW&B run: {tracking.run_location(logger)}"
    finally:
        tracking.finish()
    if summary:
        log.info(summary)


def _export(trainer, task, datamodule, cfg, run_dir: Path, logger, name: str) -> Path:
    """Export the best checkpoint's encoder (safetensors + yaml) and log it to W&B."""
    checkpoint = best_or_last(trainer)
    if checkpoint is not None:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
        task.load_state_dict(state)
    store = datamodule.store
    metadata = {
        "bands": list(datamodule.bands),
        "normalization": datamodule.datasets["train"].stats.to_dict(),
        "input_size": cfg.input_size,
        "ssl": cfg.ssl.name,
        "data": cfg.data.name,
        "prepared": str(store.root),
        "checkpoint": str(checkpoint) if checkpoint else None,
        "wandb_run": logger.experiment.id if logger is not None else None,
        "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
    }
    directory = export_encoder(run_dir / ENCODER, task.encoder, task.spec, metadata)
    tracking.log_encoder_artifact(logger, directory, f"encoder-{name}", metadata)
    return directory


if __name__ == "__main__":
    hydra_main("pretrain")
