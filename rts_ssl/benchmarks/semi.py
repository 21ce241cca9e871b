"""Seconds per training step of semi-supervised fine-tuning methods vs supervised.

The same network (U-Net on the encoder), crops, batch size and data path; each method runs
Lightning's fit for ``warmup`` untimed and ``steps`` timed steps in the same process, its
unlabelled crops drawn from the same data. A cell's time is dominated by these steps
(validation and test are the same for every method), so the ratio is what a curve cell
costs more.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl

from rts_ssl.benchmarks.pretraining import ENCODERS, StepTimer
from rts_ssl.data.datamodule import TileDataModule
from rts_ssl.models.finetune import SegmentationTask
from rts_ssl.models.semi import SemiSupervisedTask

DECODER = [128, 64, 32, 16, 16]  # the fine-tuning default (conf/finetune.yaml)


def step_seconds(data: dict, workdir: Path, semi: dict | None, encoder: str, size: int,
                 batch: int, steps: int, warmup: int) -> float:
    """Mean wall time of a timed training step (data loading included)."""
    spec = {**ENCODERS[encoder], "in_chans": len(data["bands"]), "input_size": size}
    datamodule = TileDataModule(
        data, batch_size=batch, crop_size=size, samples_per_epoch=batch * (steps + warmup),
        split={"test_regions": [], "val_fraction": 0.25, "test_fraction": 0.0},  # val: unused
        labels={"fraction": 1.0, "seed": 0}, slump_crops=0.5,
        unlabelled=data if semi else None,
        unlabelled_ratio=semi["unlabelled_ratio"] if semi else 1.0)
    options = {"decoder_channels": DECODER, "warmup_epochs": 0}
    task = SemiSupervisedTask(spec, semi, **options) if semi else SegmentationTask(spec, **options)
    timer = StepTimer(warmup)
    trainer = pl.Trainer(max_epochs=1, logger=False, callbacks=[timer], accelerator="auto",
                         devices=1, enable_checkpointing=False, limit_val_batches=0,
                         enable_model_summary=False, enable_progress_bar=False,
                         default_root_dir=str(workdir))
    trainer.fit(task, datamodule=datamodule)
    return timer.elapsed / timer.steps


def run(data: dict, workdir: Path, methods: dict[str, dict], encoder: str = "resnet18",
        size: int = 128, batch: int = 8, steps: int = 20, warmup: int = 3) -> dict[str, float]:
    """Seconds per step of supervised training and of each method, and their ratios."""
    pl.seed_everything(0)
    supervised = step_seconds(data, workdir, None, encoder, size, batch, steps, warmup)
    figures = {"supervised": supervised}
    for name, semi in methods.items():
        figures[name] = step_seconds(data, workdir, semi, encoder, size, batch, steps, warmup)
        figures[f"{name}_ratio"] = figures[name] / supervised
    return figures
