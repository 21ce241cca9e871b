"""Trainer construction and resuming, shared by the training commands."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig
from pytorch_lightning.loggers import CSVLogger

from rts_ssl.errors import InputError

LAST = "last.ckpt"


def build_trainer(cfg: DictConfig, callbacks: DictConfig | None, run_dir: Path,
                  logger) -> pl.Trainer:
    """Trainer from the ``trainer`` config group with the ``callbacks`` group's callbacks.

    Besides W&B, every run writes its learning curves (the logged metrics per step and
    epoch) to ``<run dir>/metrics.csv``: readable without W&B, and what experiments commit.
    """
    made = [hydra.utils.instantiate(c) for c in (callbacks or {}).values() if c is not None]
    curves = CSVLogger(run_dir, name="", version="")
    return hydra.utils.instantiate(cfg, logger=[logger, curves] if logger else [curves],
                                   callbacks=made, default_root_dir=str(run_dir))


def resume_checkpoint(resume: bool | str | None, runs: Path, run_dir: Path) -> Path | None:
    """``last.ckpt`` to continue from: ``true`` = this run's own folder when it holds one (an
    experiment's recipe, interrupted), else the newest run under ``runs``; or a path."""
    if resume in (None, False, "false", ""):
        return None
    if resume is True or resume == "true":
        if (own := run_dir / "checkpoints" / LAST).is_file():
            return own
        found = sorted(runs.glob(f"*/checkpoints/{LAST}"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise InputError(runs, f"resume=true but no earlier run with checkpoints/{LAST}")
        return found[-1]
    path = Path(str(resume))
    for candidate in (path, path / LAST, path / "checkpoints" / LAST):
        if candidate.is_file():
            return candidate
    raise InputError(path, f"resume: no checkpoint there ({LAST} or checkpoints/{LAST})")


def best_or_last(trainer: pl.Trainer) -> Path | None:
    """The best checkpoint by the monitored metric, else the last one."""
    callback = trainer.checkpoint_callback
    best = getattr(callback, "best_model_path", "")
    if best:
        return Path(best)
    last = getattr(callback, "last_model_path", "")
    return Path(last) if last else None
