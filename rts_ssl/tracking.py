"""Weights & Biases: run names, groups, config, encoder artifacts. Offline by default.

Offline runs need no account and no network; they live in the run directory and can be
uploaded later with ``wandb sync <run dir>/wandb/offline-run-*``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import hydra
import pandas as pd
import wandb
from omegaconf import OmegaConf
from pytorch_lightning.loggers import WandbLogger

log = logging.getLogger(__name__)


def run_name(*parts: object) -> str:
    """A name that explains itself, e.g. ``simclr-resnet18-synthetic_planet``."""
    return "-".join(str(p) for p in parts if p not in (None, ""))


def make_logger(cfg: Mapping, save_dir: Path, name: str, group: str, job_type: str,
                config: dict) -> WandbLogger | None:
    """The ``logger`` config group's logger (``_target_``), None when ``mode: disabled``."""
    if cfg.get("mode", "offline") == "disabled":
        return None
    save_dir.mkdir(parents=True, exist_ok=True)
    options = dict(OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg)
    target = hydra.utils.get_class(options.pop("_target_"))  # `config` is W&B's: no instantiate
    return target(name=name, group=group, job_type=job_type, save_dir=str(save_dir),
                  config=config, **options)


def log_encoder_artifact(logger: WandbLogger | None, directory: Path, name: str,
                         metadata: dict) -> None:
    """Log an exported encoder directory as artifact type ``encoder`` (latest + best)."""
    if logger is None:
        return
    artifact = wandb.Artifact(name=name, type="encoder", metadata=metadata)
    artifact.add_dir(str(directory))
    logger.experiment.log_artifact(artifact, aliases=["latest", "best"])


def run_location(logger: WandbLogger | None) -> str:
    """Where the W&B run is: its URL online, its directory offline."""
    if logger is None:
        return "W&B disabled"
    run = logger.experiment
    if getattr(run, "offline", False) or not getattr(run, "url", None):
        return f"{Path(run.dir).parent} (offline; upload with `wandb sync` on that folder)"
    return run.url


def finish() -> None:
    """End the active W&B run (called in ``finally`` so failed sweep jobs close too)."""
    if wandb.run is not None:
        wandb.finish()


def finetune_results(group_ref: str) -> pd.DataFrame:
    """Finished fine-tuning runs of a W&B group, ``<entity>/<project>/<group>`` (online).

    One row per run with the fields curves group by and the test metrics.
    """
    from rts_ssl.evaluation.curves import METRICS

    path, _, group = group_ref.rpartition("/")
    runs = wandb.Api().runs(path, filters={"group": group, "jobType": "finetune"})
    rows = [{**{k: run.config.get(k) for k in ("pretrained", "label_fraction", "seed")},
             **{k: run.summary.get(k) for k in METRICS}}
            for run in runs if run.state == "finished"]
    if not rows:
        raise ValueError(f"wandb:{group_ref}: no finished fine-tuning runs in that group")
    return pd.DataFrame(rows)
