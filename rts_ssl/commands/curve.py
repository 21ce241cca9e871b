"""``python -m rts_ssl curve pretrained=[A,B,none] fractions=[...] seeds=[0,1,2]``.

Runs the label-efficiency grid as one Hydra multirun of ``finetune`` per checkpoint (cells
land in ``<output>/cells/<checkpoint>/f<fraction>_s<seed>``; finished cells are skipped, so
an interrupted curve resumes), then aggregates and writes ``curve.csv`` + ``curve.png``.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import wandb
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from rts_ssl import tracking
from rts_ssl.data.tiles import write_atomic
from rts_ssl.errors import InputError
from rts_ssl.evaluation.curves import aggregate, area_under_curve, collect_results, plot_curves
from rts_ssl.models.export import read_info
from rts_ssl.models.pretrained import resolve_pretrained

log = logging.getLogger(__name__)
CURVE_KEYS = ("pretrained", "fractions", "seeds", "finetune", "output")


def run(cfg: DictConfig) -> None:
    output = Path(cfg.output)
    names = checkpoint_names(cfg)
    for ref, name in names.items():
        _run_cells(cfg, ref, name, output)
    results = collect_results(output / "cells")
    curve = aggregate(results)
    areas = area_under_curve(curve)
    curve["auc_iou"] = curve["pretrained"].map(areas)
    write_atomic(output / "curve.csv", lambda tmp: curve.to_csv(tmp, index=False))
    plot_curves(curve, output / "curve.png")
    _log_summary(cfg, curve, output)
    for name, area in areas.sort_values(ascending=False).items():
        log.info("%-40s area under IoU curve %.3f", name, area)
    log.info("curve: %s and %s", output / "curve.csv", output / "curve.png")


def checkpoint_names(cfg: DictConfig) -> dict[str, str]:
    """A short, unique label per checkpoint (``<ssl>-<encoder>-<data>`` or ``random-...``)."""
    names: dict[str, str] = {}
    for ref in cfg.pretrained:
        source = resolve_pretrained(ref, cfg.paths.cache_dir)
        if source is None:
            name = f"random-{cfg.encoder.name}"
        else:
            info = read_info(source)
            name = f"{info['ssl']}-{info['architecture']['name']}-{info['data']}"
        while name in names.values():
            name += "+"
        names[str(ref)] = name
    return names


def _passthrough() -> list[str]:
    """The user's overrides and config dirs that also apply to every fine-tuning run."""
    hydra_cfg = HydraConfig.get()
    overrides = [o for o in hydra_cfg.overrides.task if o.split("=")[0].lstrip("+~")
                 not in CURVE_KEYS]
    dirs = [s.path.removeprefix("file://") for s in hydra_cfg.runtime.config_sources
            if s.provider == "command-line"]
    return [arg for d in dirs for arg in ("--config-dir", d)] + overrides


def _run_cells(cfg: DictConfig, ref: str, name: str, output: Path) -> None:
    fractions = ",".join(str(f) for f in cfg.fractions)
    seeds = ",".join(str(s) for s in cfg.seeds)
    command = [sys.executable, "-m", "rts_ssl", "finetune", "--multirun", *_passthrough(),
               f"pretrained={ref}", f"pretrained_name={name}", "skip_done=true",
               f"data.label_fraction={fractions}", f"seed={seeds}",
               f"hydra.sweep.dir={output / 'cells' / name}",
               "hydra.sweep.subdir=f${data.label_fraction}_s${seed}", *cfg.finetune]
    log.info("curve cells for %s: %d fractions x %d seeds", name, len(cfg.fractions),
             len(cfg.seeds))
    if subprocess.run(command).returncode != 0:
        raise InputError(name, "a fine-tuning run of the curve failed (see its log above)")


def _log_summary(cfg: DictConfig, curve, output: Path) -> None:
    """One W&B run (job_type curve): the table, a line plot and the PNG."""
    logger = tracking.make_logger(cfg.logger, output, f"curve-{cfg.data.name}",
                                  group=f"curve-{cfg.data.name}", job_type="curve",
                                  config=OmegaConf.to_container(cfg, resolve=True))
    if logger is None:
        return
    try:
        lines = {name: g for name, g in curve.groupby("pretrained")}
        logger.experiment.log({
            "curve/table": wandb.Table(dataframe=curve),
            "curve/png": wandb.Image(str(output / "curve.png")),
            "curve/iou": wandb.plot.line_series(
                xs=[g["label_fraction"].tolist() for g in lines.values()],
                ys=[g["iou_mean"].tolist() for g in lines.values()],
                keys=list(lines), title="test IoU vs label fraction", xname="label fraction"),
        })
    finally:
        tracking.finish()
