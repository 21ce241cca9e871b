"""Label-efficiency curves: per checkpoint and label fraction, mean and 95 % CI over seeds,
and the area under the curve on log fraction (one number per checkpoint)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

METRICS = ("test/iou", "test/f1", "test/object_f1")
# two-sided 95 % Student t quantiles for 1..30 degrees of freedom (no scipy needed)
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t95(dof: int) -> float:
    """Two-sided 95 % t quantile (normal beyond 30 degrees of freedom)."""
    return _T95[dof - 1] if 1 <= dof <= len(_T95) else 1.96


def collect_results(root: str | Path) -> pd.DataFrame:
    """Every finished cell (``result.json``) below ``root``, one row each."""
    rows = [json.loads(p.read_text()) for p in sorted(Path(root).rglob("result.json"))]
    if not rows:
        raise ValueError(f"{root}: no finished fine-tuning runs (result.json) found")
    return pd.DataFrame(rows)


def aggregate(results: pd.DataFrame, metrics=METRICS) -> pd.DataFrame:
    """Mean, std, n and 95 % CI half-width over seeds per (pretrained, label_fraction)."""
    rows = []
    for (name, fraction), group in results.groupby(["pretrained", "label_fraction"]):
        row = {"pretrained": name, "label_fraction": float(fraction), "seeds": len(group)}
        for metric in metrics:
            values = group[metric].astype(float).to_numpy()
            key = metric.removeprefix("test/")
            std = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
            row |= {f"{key}_mean": float(values.mean()), f"{key}_std": std,
                    f"{key}_ci95": t95(len(values) - 1) * std / np.sqrt(len(values))
                    if len(values) > 1 else float("nan")}
        rows.append(row)
    return pd.DataFrame(rows).sort_values(["pretrained", "label_fraction"], ignore_index=True)


def area_under_curve(curve: pd.DataFrame, metric: str = "iou") -> pd.Series:
    """Normalised area under mean ``metric`` vs log10(fraction), per checkpoint (0-1)."""
    areas = {}
    for name, group in curve.groupby("pretrained"):
        x = np.log10(group["label_fraction"].to_numpy())
        y = group[f"{metric}_mean"].to_numpy()
        span = x.max() - x.min()
        areas[name] = float(np.trapezoid(y, x) / span) if span > 0 else float(y.mean())
    return pd.Series(areas, name=f"auc_{metric}")


def plot_curves(curve: pd.DataFrame, path: str | Path, metric: str = "iou") -> Path:
    """Metric vs label fraction (log x), one line with a 95 % CI band per checkpoint."""
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for name, group in curve.groupby("pretrained"):
        x, y = group["label_fraction"], group[f"{metric}_mean"]
        ci = group[f"{metric}_ci95"].fillna(0)
        ax.plot(x, y, marker="o", label=name)
        ax.fill_between(x, y - ci, y + ci, alpha=0.2)
    ax.set_xscale("log")
    ax.set_xlabel("fraction of labelled locations used for training")
    ax.set_ylabel(f"test {metric} (held-out region)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def rank_checkpoints(curve: pd.DataFrame, at=(0.01, 0.1, 1.0)) -> pd.DataFrame:
    """Checkpoints ranked by area under the IoU curve, with IoU at chosen label fractions
    (the nearest fraction measured on log scale)."""
    rows = []
    areas = area_under_curve(curve)
    for name, group in curve.groupby("pretrained"):
        row = {"pretrained": name, "auc_iou": areas[name]}
        logs = np.log10(group["label_fraction"].to_numpy())
        for fraction in at:
            nearest = group.iloc[int(np.argmin(np.abs(logs - np.log10(fraction))))]
            row[f"iou@{fraction:g}"] = nearest["iou_mean"]
        rows.append(row)
    return pd.DataFrame(rows).sort_values("auc_iou", ascending=False, ignore_index=True)
