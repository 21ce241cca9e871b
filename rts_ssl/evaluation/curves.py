"""Label-efficiency curves: per checkpoint and label fraction, mean and 95 % CI over seeds,
and the area under the curve on log fraction (one number per checkpoint, with its interval,
and for a pretrained checkpoint its gain over random init, paired by seed).

With several held-out regions (folds), a seed's value is the mean over its folds: the
interval says how much the result depends on the seed, not on which region is hardest.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from rts_ssl.data.splits import FOLD  # noqa: E402
from rts_ssl.errors import InputError  # noqa: E402

METRICS = ("test/iou", "test/f1", "test/precision", "test/recall", "test/object_f1",
           "test/object_fp_per_100km2", "test/slump_fraction",
           "seconds")  # slump_fraction: the IoU of calling every pixel a slump; seconds: cost
# two-sided 95 % Student t quantiles for 1..30 degrees of freedom (no scipy needed)
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t95(dof: int) -> float:
    """Two-sided 95 % t quantile (normal beyond 30 degrees of freedom)."""
    return _T95[dof - 1] if 1 <= dof <= len(_T95) else 1.96


# what names a cell (the rest of a row is what it measured)
CELL_KEYS = ("pretrained", "ssl", "encoder", "mode", "semi", "unlabelled", FOLD,
             "label_fraction", "label_count", "seed")


def collect_results(root: str | Path, earlier: str | Path | None = None) -> pd.DataFrame:
    """Every finished cell (``result.json``) below ``root``, one row each; with ``earlier``
    (a curve's ``cells.csv``: committed cells that ran on another machine) also its rows,
    except those of a cell found below ``root``, which wins."""
    rows = pd.DataFrame([json.loads(p.read_text())
                         for p in sorted(Path(root).rglob("result.json"))])
    if earlier is not None:
        rows = _with_earlier(rows, Path(earlier))
    if rows.empty:
        raise InputError(root, "no finished fine-tuning runs (result.json): run the cells "
                         "first (`python -m rts_ssl finetune -m ...` or `experiment=<name>`)")
    return rows


def _with_earlier(found: pd.DataFrame, path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise InputError(path, "no such cells.csv (earlier_cells=...)")
    try:
        earlier = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise InputError(path, f"cannot read earlier cells: {error}") from None
    if missing := {"pretrained", "label_fraction", "seed", "test/iou"} - set(earlier):
        raise InputError(path, f"not a curve's cells.csv: no column {', '.join(sorted(missing))}")
    if found.empty:
        return earlier
    keys = [c for c in CELL_KEYS if c in found and c in earlier]
    rows = pd.concat([found, earlier], ignore_index=True)
    named = rows[keys].astype(object).where(rows[keys].notna(), None).astype(str)
    return rows[~named.duplicated(keep="first")].reset_index(drop=True)


def missing_cells(results: pd.DataFrame, selection: dict[str, list]) -> list[dict]:
    """The cells a curve's selection asks for (every combination of its values) that have
    no result: still running, failed or never run. A seed missing a fold is averaged over
    the folds it has, so a curve with gaps is not the curve asked for."""
    columns = [c for c in selection if c in results]
    present = set(results[columns].itertuples(index=False, name=None))
    return [dict(zip(columns, values, strict=True)) for values in
            itertools.product(*(selection[c] for c in columns)) if values not in present]


def seed_values(results: pd.DataFrame, metrics=METRICS) -> pd.DataFrame:
    """One row per (pretrained, label_fraction, seed): each metric averaged over the folds
    (held-out regions) that seed was tested on."""
    metrics = [m for m in metrics if m in results.columns]
    results = results.assign(**{m: results[m].astype(float) for m in metrics})
    keys = ["pretrained", "label_fraction", "seed"]
    return results.groupby(keys, as_index=False)[metrics].mean()


def aggregate(results: pd.DataFrame, metrics=METRICS) -> pd.DataFrame:
    """Mean, std, n and 95 % CI half-width over seeds per (pretrained, label_fraction), and
    the area under each seed's IoU curve (``auc_iou`` with its ``auc_iou_ci95``)."""
    per_seed = seed_values(results, metrics)
    folds = results[FOLD].nunique() if FOLD in results.columns else 1
    rows = []
    for (name, fraction), group in per_seed.groupby(["pretrained", "label_fraction"]):
        row = {"pretrained": name, "label_fraction": float(fraction), "seeds": len(group),
               "folds": int(folds)}
        for metric in [m for m in metrics if m in per_seed.columns]:
            row |= _summary(metric.removeprefix("test/"), group[metric].to_numpy())
        rows.append(row)
    curve = pd.DataFrame(rows).sort_values(["pretrained", "label_fraction"], ignore_index=True)
    areas = seed_areas(per_seed)
    summary = {name: _summary("auc_iou", values.to_numpy())
               for name, values in areas.groupby("pretrained")["auc_iou"]}
    _add_per_line(curve, summary, ("auc_iou_mean", "auc_iou_ci95"))
    if gains := random_init_gains(results, areas):
        _add_per_line(curve, gains, GAIN_COLUMNS)
    return curve


def _add_per_line(curve: pd.DataFrame, values: dict[str, dict], columns: tuple[str, ...]):
    """Columns holding one value per line (``_mean`` dropped from their names)."""
    for column in columns:
        curve[column.removesuffix("_mean")] = curve["pretrained"].map(
            {name: line[column] for name, line in values.items()})


GAIN_COLUMNS = ("auc_iou_gain_over", "auc_iou_gain_mean", "auc_iou_gain_ci95")


def random_init_gains(results: pd.DataFrame,
                      areas: pd.DataFrame) -> dict[str, dict[str, float | str]]:
    """Per pretrained line, its area under the IoU curve minus that of random init of the
    same encoder (and semi-supervised method), seed by seed, with the 95 % interval of the
    differences (``areas``: ``seed_areas`` of the results). A seed gives both lines the
    same labelled tiles, so pairing removes the seed-to-seed spread that widens the two
    lines' own intervals. Needs the cells' ``ssl`` and ``encoder``; lines without a
    random-init partner get none."""
    if not {"ssl", "encoder"} <= set(results.columns):
        return {}
    semi = results["semi"].fillna("none").replace("", "none") if "semi" in results else "none"
    lines = results.assign(semi=semi).groupby("pretrained")[["ssl", "encoder", "semi"]].first()
    areas = areas.pivot(index="seed", columns="pretrained", values="auc_iou")
    random_init = lines[lines["ssl"] == "none"]
    gains = {}
    for name, line in lines[lines["ssl"] != "none"].iterrows():
        partner = random_init.index[(random_init["encoder"] == line["encoder"])
                                    & (random_init["semi"] == line["semi"])]
        differences = (areas[name] - areas[partner[0]]).dropna() if len(partner) == 1 else []
        if len(differences):
            gains[name] = {"auc_iou_gain_over": partner[0],
                           **_summary("auc_iou_gain", differences.to_numpy())}
    return gains


def _summary(key: str, values: np.ndarray) -> dict[str, float]:
    std = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
    ci = t95(len(values) - 1) * std / np.sqrt(len(values)) if len(values) > 1 else float("nan")
    return {f"{key}_mean": float(values.mean()), f"{key}_std": std, f"{key}_ci95": ci}


def seed_areas(per_seed: pd.DataFrame, metric: str = "test/iou") -> pd.DataFrame:
    """Area under each (pretrained, seed) curve of ``metric`` vs log10(fraction), 0-1."""
    rows = []
    for (name, seed), group in per_seed.groupby(["pretrained", "seed"]):
        group = group.sort_values("label_fraction")
        rows.append({"pretrained": name, "seed": seed,
                     "auc_iou": _area(group["label_fraction"].to_numpy(),
                                      group[metric].to_numpy())})
    return pd.DataFrame(rows)


def area_under_curve(curve: pd.DataFrame, metric: str = "iou") -> pd.Series:
    """Normalised area under mean ``metric`` vs log10(fraction), per checkpoint (0-1)."""
    areas = {name: _area(g["label_fraction"].to_numpy(), g[f"{metric}_mean"].to_numpy())
             for name, g in curve.groupby("pretrained")}
    return pd.Series(areas, name=f"auc_{metric}")


def _area(fractions: np.ndarray, values: np.ndarray) -> float:
    x = np.log10(fractions)
    span = x.max() - x.min()
    return float(np.trapezoid(values, x) / span) if span > 0 else float(values.mean())


def evaluated_on(folds: Iterable[str]) -> str:
    """What a curve's cells were tested on, for its axis labels: the regions its folds hold
    out, or tiles of the training regions when none is held out (``split.test_regions=[]``)."""
    regions = sorted({region for fold in folds for region in str(fold).split(",") if region})
    return f"held out: {', '.join(regions)}" if regions else "tiles within the training regions"


def plot_curves(curve: pd.DataFrame, path: str | Path, test_set: str,
                metrics: tuple[str, ...] = ("iou", "object_f1")) -> Path:
    """Metrics vs label fraction (log x), one line with a 95 % CI band per checkpoint;
    ``test_set`` names what was tested on (``evaluated_on``)."""
    metrics = [m for m in metrics if f"{m}_mean" in curve.columns]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), dpi=100,
                             squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for name, group in curve.groupby("pretrained"):
            x, y = group["label_fraction"], group[f"{metric}_mean"]
            ci = group[f"{metric}_ci95"].fillna(0)
            ax.plot(x, y, marker="o", label=name)
            ax.fill_between(x, y - ci, y + ci, alpha=0.2)
        if metric == "iou" and curve.get("slump_fraction_mean", pd.Series()).notna().any():
            ax.axhline(curve["slump_fraction_mean"].mean(), color="grey", linestyle="--",
                       label="every pixel a slump")
        ax.set_xscale("log")
        ax.set_xlabel("fraction of labelled locations used for training")
        ax.set_ylabel(f"test {metric.replace('_', ' ')} ({test_set})")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def rank_checkpoints(curve: pd.DataFrame, at=(0.01, 0.1, 1.0)) -> pd.DataFrame:
    """Checkpoints ranked by area under the IoU curve (with its 95 % interval over seeds
    where known), with IoU at chosen label fractions (the nearest measured, log scale)."""
    rows = []
    areas = area_under_curve(curve)
    for name, group in curve.groupby("pretrained"):
        row = {"pretrained": name, "auc_iou": areas[name]}
        for column in ("auc_iou_ci95", *(c.removesuffix("_mean") for c in GAIN_COLUMNS)):
            if column in group.columns:
                row[column] = group[column].iloc[0]
        logs = np.log10(group["label_fraction"].to_numpy())
        for fraction in at:
            nearest = group.iloc[int(np.argmin(np.abs(logs - np.log10(fraction))))]
            row[f"iou@{fraction:g}"] = nearest["iou_mean"]
        rows.append(row)
    return pd.DataFrame(rows).sort_values("auc_iou", ascending=False, ignore_index=True)
