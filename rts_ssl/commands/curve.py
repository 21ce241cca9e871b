"""``python -m rts_ssl curve pretrained=[A,B,none] fractions=[...] seeds=[0,1,2]``.

Runs the label-efficiency grid, entries x semi_methods x folds x fractions x seeds, as one Hydra
multirun of ``finetune`` per line (entry, or entry+semi-supervised method) and fold (cells in
``<output>/cells/<line>/<fold>/f<fraction>_s<seed>``; finished cells are skipped, so an
interrupted curve resumes), then aggregates and writes ``curve.csv`` + ``curve.png`` (and
``cells.csv``: every cell's result, the data behind the curve).
An entry is a checkpoint and its own fine-tuning overrides (e.g. other bands, or
``encoder=spectral_rule`` for the rule baseline); a fold is a set of held-out test regions.
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
from rts_ssl.commands import hydra_main
from rts_ssl.data.splits import FOLD, fold_key
from rts_ssl.errors import InputError
from rts_ssl.evaluation.curves import aggregate, collect_results, plot_curves
from rts_ssl.files import write_atomic
from rts_ssl.models.export import read_info
from rts_ssl.models.pretrained import NONE, TORCHGEO, resolve_pretrained

log = logging.getLogger(__name__)
CURVE_KEYS = ("pretrained", "entries", "folds", "semi_methods", "fractions", "seeds",
              "finetune", "output")


def run(cfg: DictConfig) -> None:
    output = Path(cfg.output)
    entries = curve_entries(cfg)
    folds = [list(fold) for fold in cfg.folds] if cfg.folds else [None]
    lines = []
    for name, (ref, overrides) in entries.items():
        for semi in cfg.semi_methods or ["none"]:
            line = name if semi == "none" else f"{name}+{semi}"
            lines.append(line)
            for fold in folds:
                method = [f"semi={semi}"] if semi != "none" else []  # none: the entry's own
                _run_cells(cfg, line, ref, [*overrides, *method], fold, output)
    results = _grid_cells(collect_results(output / "cells"), cfg, lines)
    curve = aggregate(results)
    write_atomic(output / "curve.csv", lambda tmp: curve.to_csv(tmp, index=False))
    order = [c for c in ("pretrained", FOLD, "label_fraction", "seed") if c in results]
    cells = results.drop(columns="model").sort_values(order)
    write_atomic(output / "cells.csv", lambda tmp: cells.to_csv(tmp, index=False))
    plot_curves(curve, output / "curve.png")
    _log_summary(cfg, curve, output)
    areas = curve.groupby("pretrained")[["auc_iou", "auc_iou_ci95"]].first()
    for name, row in areas.sort_values("auc_iou", ascending=False).iterrows():
        log.info("%-40s area under IoU curve %.3f +- %.3f", name, row["auc_iou"],
                 row["auc_iou_ci95"])
    log.info("curve: %s and %s", output / "curve.csv", output / "curve.png")


def curve_entries(cfg: DictConfig) -> dict[str, tuple[str, list[str]]]:
    """Entry name -> (pretrained reference, fine-tuning overrides): the named ``entries``,
    and one per ``pretrained`` reference named after its encoder."""
    entries: dict[str, tuple[str, list[str]]] = {}
    for ref in cfg.pretrained or []:
        name = _checkpoint_name(str(ref), cfg)
        while name in entries:
            name += "+"
        entries[name] = (str(ref), [])
    for name, entry in (cfg.entries or {}).items():
        if entry is not None:  # null removes an entry an experiment inherited
            entries[str(name)] = (str(entry.get("pretrained") or "none"),
                                  [str(o) for o in entry.get("finetune") or []])
    if not entries:
        raise InputError("curve", "name checkpoints: pretrained=[...] or entries={...}")
    return entries


def _checkpoint_name(ref: str, cfg: DictConfig) -> str:
    """``<ssl>-<encoder>-<data>``, ``random-<encoder>`` or ``torchgeo-<weights>``."""
    if ref in NONE:
        return f"random-{cfg.encoder.name}"
    if ref.startswith(TORCHGEO):
        return f"torchgeo-{ref.removeprefix(TORCHGEO)}"
    info = read_info(resolve_pretrained(ref, cfg.paths.cache_dir))
    return f"{info['ssl']}-{info['architecture']['name']}-{info['data']}"


def _passthrough() -> list[str]:
    """The user's overrides and config dirs that also apply to every fine-tuning run."""
    hydra_cfg = HydraConfig.get()
    overrides = [o for o in hydra_cfg.overrides.task
                 if o.split("=")[0].lstrip("+~").split(".")[0] not in CURVE_KEYS]
    dirs = [s.path.removeprefix("file://") for s in hydra_cfg.runtime.config_sources
            if s.provider == "command-line"]
    return [arg for d in dirs for arg in ("--config-dir", d)] + overrides


def _grid_cells(results, cfg: DictConfig, lines: list[str]):
    """The cells of this curve's grid only: a folder may hold cells of earlier runs with
    other folds, fractions or seeds (they would shift the means)."""
    keep = (results["pretrained"].isin(lines)
            & results["label_fraction"].astype(float).isin([float(f) for f in cfg.fractions])
            & results["seed"].isin(list(cfg.seeds)))
    if cfg.folds:
        keep &= results[FOLD].isin([fold_key(fold) for fold in cfg.folds])
    return results[keep]


def _run_cells(cfg: DictConfig, name: str, ref: str, overrides: list[str],
               fold: list[str] | None, output: Path) -> None:
    fractions = ",".join(str(f) for f in cfg.fractions)
    seeds = ",".join(str(s) for s in cfg.seeds)
    fold_args = [f"split.test_regions=[{fold_key(fold)}]"] if fold else []
    fold_dir = "test-" + "+".join(fold) if fold else "default"
    command = [sys.executable, "-m", "rts_ssl", "finetune", "--multirun", *_passthrough(),
               f"pretrained={ref}", f"pretrained_name={name}",
               f"label_fraction={fractions}", f"seed={seeds}",
               f"hydra.sweep.dir={output / 'cells' / name / fold_dir}",
               "hydra.sweep.subdir=f${label_fraction}_s${seed}", "hydra.sweeper.params=null",
               *cfg.finetune, *overrides, *fold_args]
    log.info("curve cells for %s, fold %s: %d fractions x %d seeds", name, fold_dir,
             len(cfg.fractions), len(cfg.seeds))
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


if __name__ == "__main__":
    hydra_main("curve")
