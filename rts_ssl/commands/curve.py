"""``python -m rts_ssl curve [experiment=<name>] [output=<dir>]``: a label-efficiency curve
from the cells of a ``finetune`` sweep.

The cells run as a plain Hydra multirun of ``finetune`` (``finetune experiment=<name>``: its
``grid``; or ``finetune -m pretrained=A,none label_fraction=0.1,1.0 seed=0,1,2``), each a
folder under ``<output>/cells`` holding a ``result.json``. This aggregates them into
``curve.csv`` + ``curve.png`` (and ``cells.csv``: every cell's result, the data behind the
curve): the cells of the experiment's grid, or those ``lines``, ``folds``, ``fractions`` and
``seeds`` select, or every cell found. A line is an entry (a checkpoint with its settings)
or entry+semi-supervised method; a fold is a set of held-out test regions.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import wandb
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from rts_ssl import tracking
from rts_ssl.commands import hydra_main
from rts_ssl.data.splits import FOLD, fold_key
from rts_ssl.errors import InputError
from rts_ssl.evaluation.curves import (
    aggregate,
    collect_results,
    evaluated_on,
    missing_cells,
    plot_curves,
)
from rts_ssl.files import write_atomic

log = logging.getLogger(__name__)
MOVED = ("pretrained", "entries", "semi_methods", "finetune")  # of the curve that ran cells


def run(cfg: DictConfig) -> None:
    if moved := [key for key in MOVED if cfg.get(key) is not None]:
        raise InputError(moved[0], "curve only aggregates now: run the cells first with "
                         "`python -m rts_ssl finetune -m pretrained=<A>,none "
                         "label_fraction=0.1,1.0 seed=0,1,2` (or `finetune "
                         "experiment=<name>`), then `curve`")
    output = Path(cfg.output)
    selection = cell_selection(cfg)
    results = collect_results(output / "cells", cfg.earlier_cells)
    for column, values in selection.items():
        results = results[results[column].isin(values)]
    if results.empty:
        raise InputError(output / "cells", f"no finished cell matches {selection}")
    if missing := missing_cells(results, selection):
        log.warning("selected cells without a result (still running, failed or not run), "
                    "left out of the curve: %d, e.g. %s", len(missing), "; ".join(
                        " ".join(f"{k}={v}" for k, v in cell.items()) for cell in missing[:3]))
    curve = aggregate(results)
    output.mkdir(parents=True, exist_ok=True)  # absent when every cell is an earlier one
    write_atomic(output / "curve.csv", lambda tmp: curve.to_csv(tmp, index=False))
    order = [c for c in ("pretrained", FOLD, "label_fraction", "seed") if c in results]
    cells = results.drop(columns="model", errors="ignore").sort_values(order)
    write_atomic(output / "cells.csv", lambda tmp: cells.to_csv(tmp, index=False))
    plot_curves(curve, output / "curve.png",
                evaluated_on(results[FOLD].fillna("") if FOLD in results else []))
    _log_summary(cfg, curve, output)
    areas = curve.groupby("pretrained").first()
    for name, row in areas.sort_values("auc_iou", ascending=False).iterrows():
        log.info("%-40s area under IoU curve %.3f +- %.3f", name, row["auc_iou"],
                 row["auc_iou_ci95"])
    gains = areas.dropna(subset=["auc_iou_gain"]) if "auc_iou_gain" in areas else areas[:0]
    for name, row in gains.iterrows():
        log.info("%-40s minus %s, paired by seed: %+.3f +- %.3f", name,
                 row["auc_iou_gain_over"], row["auc_iou_gain"], row["auc_iou_gain_ci95"])
    log.info("curve of %d cells: %s and %s", len(cells), output / "curve.csv",
             output / "curve.png")


def cell_selection(cfg: DictConfig) -> dict[str, list]:
    """Result column -> the values a cell needs to be on this curve: the selection keys,
    else the experiment's grid (a folder may also hold cells of other grids, which would
    shift the means); a column with neither is not filtered."""
    grid = grid_values(cfg.get("grid"))
    entries, methods = grid.get("entry"), grid.get("semi", ["none"])
    lines = cfg.lines or (entries and [e if m == "none" else f"{e}+{m}"
                                       for e in entries for m in methods])
    folds = cfg.folds or grid.get("split.test_regions")
    selection = {"pretrained": lines, FOLD: folds and [fold_key(f) for f in folds],
                 "label_fraction": [float(f) for f in cfg.fractions or
                                    grid.get("label_fraction") or []],
                 "seed": list(cfg.seeds or grid.get("seed") or [])}
    return {column: list(values) for column, values in selection.items() if values}


def grid_values(grid: DictConfig | None) -> dict[str, list]:
    """Each key of a sweep grid with the values ``finetune`` sweeps (Hydra's own parser)."""
    parser = OverridesParser.create()
    values = {}
    for key, text in (grid or {}).items():
        override = parser.parse_override(f"{key}={text}")
        values[key] = (list(override.sweep_iterator()) if override.is_sweep_override()
                       else [override.value()])
    return values


def _log_summary(cfg: DictConfig, curve: pd.DataFrame, output: Path) -> None:
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
