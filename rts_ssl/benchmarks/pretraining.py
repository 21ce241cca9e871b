"""Images/s of the full pretraining loop vs bare model steps, and MAE vs SimCLR on a ViT.

(a) the loop: Lightning fit with the DataModule (memmap tiles, random crops), on-device
views, forward/backward, optimizer, logging to an offline W&B run; (b) bare: the same task's
``ssl_loss`` + backward + optimizer step on random tensors already in memory. Same model,
batch size and process; warm-up steps are excluded from both timings.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from rts_ssl import tracking
from rts_ssl.data.datamodule import TileDataModule
from rts_ssl.models.mae import MAETask
from rts_ssl.models.simclr import SimCLRTask
from rts_ssl.models.ssl_task import SSLTask

ENCODERS = {
    "resnet18": {"name": "resnet18", "timm_name": "resnet18"},
    "vit_small": {"name": "vit_small", "timm_name": "vit_small_patch16_224", "patch_size": 8},
}
OPTIMIZER = {"name": "adamw", "lr": 1e-3, "weight_decay": 1e-4, "warmup_epochs": 0}


def make_task(method: str, encoder: str, bands: int, size: int) -> SSLTask:
    spec = {**ENCODERS[encoder], "in_chans": bands, "input_size": size}
    return (SimCLRTask if method == "simclr" else MAETask)(spec, OPTIMIZER)


class StepTimer(pl.Callback):
    """Wall time of the training steps after ``warmup`` steps (data loading included)."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.steps = warmup, None, 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if batch_idx >= self.warmup:
            self.steps += 1
            self.elapsed = time.perf_counter() - self.start


def loop_rate(task: SSLTask, data: dict, workdir: Path, batch: int, steps: int,
              warmup: int) -> float:
    """Images/s of ``trainer.fit`` over ``steps`` timed steps."""
    datamodule = TileDataModule(data, batch_size=batch, crop_size=task.spec.input_size,
                                samples_per_epoch=batch * (steps + warmup),
                                split={"val_fraction": 0.0, "test_fraction": 0.0})
    timer = StepTimer(warmup)
    logger = tracking.make_logger({"_target_": "pytorch_lightning.loggers.WandbLogger",
                                   "mode": "offline", "project": "rts_ssl-bench"}, workdir,
                                  "bench-pretrain", "bench", "bench", {})
    trainer = pl.Trainer(max_epochs=1, logger=logger, callbacks=[timer], accelerator="auto",
                         devices=1, enable_checkpointing=False, limit_val_batches=0,
                         log_every_n_steps=1, enable_model_summary=False,
                         default_root_dir=str(workdir))
    try:
        trainer.fit(task, datamodule=datamodule)
    finally:
        tracking.finish()
    return timer.steps * batch / timer.elapsed


def bare_rate(task: SSLTask, batch: int, bands: int, steps: int, warmup: int) -> float:
    """Images/s of loss + backward + optimizer step on random in-memory tensors."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    task = task.to(device).train()
    images = torch.randn(batch, bands, task.spec.input_size, task.spec.input_size, device=device)
    optimizer = torch.optim.AdamW(task.parameters(), lr=1e-3)
    for step in range(steps + warmup):
        if step == warmup:
            start = time.perf_counter()
        loss = task.ssl_loss(images)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    if device == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - start)


def run(data: dict, workdir: Path, encoder: str = "resnet18", size: int = 64, batch: int = 32,
        steps: int = 15, warmup: int = 3, vit_steps: int = 5) -> dict[str, float]:
    """All figures of ``bench pretrain``."""
    bands = len(data["bands"])
    torch.manual_seed(0)
    loop = loop_rate(make_task("simclr", encoder, bands, size), data, workdir, batch, steps,
                     warmup)
    bare = bare_rate(make_task("simclr", encoder, bands, size), batch, bands, steps, warmup)
    mae = bare_rate(make_task("mae", "vit_small", bands, size), batch, bands, vit_steps, 1)
    simclr = bare_rate(make_task("simclr", "vit_small", bands, size), batch, bands,
                       vit_steps, 1)
    return {"loop": loop, "bare": bare, "loop_ratio": loop / bare, "mae_vit_small": mae,
            "simclr_vit_small": simclr, "mae_speedup": mae / simclr}
