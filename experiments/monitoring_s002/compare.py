"""Model vs hand-mask slump area through time at one site.

Usage: python compare.py <monitor output dir> <hand masks dir> <experiment dir>
Writes <experiment dir>/series.csv, growth.json and timeseries_vs_masks.png.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import rasterio  # noqa: E402

from rts_ssl.data.scenes import date_in  # noqa: E402
from rts_ssl.monitoring.timeseries import decimal_year, theil_sen  # noqa: E402


def hand_areas(masks: Path) -> pd.DataFrame:
    rows = []
    for path in sorted(masks.glob("*_mask.tif")):
        with rasterio.open(path) as src:
            values = src.read(1)
            pixel = abs(src.transform.a * src.transform.e)
        rows.append({"date": date_in(path.name), "hand_area_m2": float((values > 0).sum() * pixel)})
    return pd.DataFrame(rows)


def model_areas(monitor: Path) -> pd.DataFrame:
    """Predicted slump area per date (all tracks), and whether every slump was observed."""
    series = pd.read_csv(monitor / "timeseries.csv")
    per_date = series.groupby("date").agg(model_area_m2=("area_m2", "sum"),
                                          observed=("observed", "all")).reset_index()
    dates = sorted(p.name.split("_")[1] for p in (monitor / "dates").glob("*_probability.tif"))
    frame = pd.DataFrame({"date": dates}).merge(per_date, on="date", how="left")
    frame["model_area_m2"] = frame["model_area_m2"].fillna(0.0)
    frame["observed"] = frame["observed"].fillna(True).astype(bool)
    return frame


def growth(frame: pd.DataFrame, column: str) -> float:
    part = frame[frame["observed"]]
    years = np.array([decimal_year(d) for d in part["date"]])
    return theil_sen(years, part[column].to_numpy())


def main(monitor: Path, masks: Path, out: Path) -> None:
    frame = hand_areas(masks).merge(model_areas(monitor), on="date", how="inner")
    frame = frame.sort_values("date").reset_index(drop=True)
    rates = {"hand_m2_per_yr": growth(frame, "hand_area_m2"),
             "model_m2_per_yr": growth(frame, "model_area_m2")}
    rates["difference_m2_per_yr"] = rates["model_m2_per_yr"] - rates["hand_m2_per_yr"]
    rates["dates"], rates["dates_observed"] = len(frame), int(frame["observed"].sum())
    seen = frame[frame["observed"]]
    rates["median_area_ratio_model_to_hand"] = float(
        np.median(seen["model_area_m2"] / seen["hand_area_m2"].clip(lower=1.0)))
    frame.to_csv(out / "series.csv", index=False)
    (out / "growth.json").write_text(json.dumps(rates, indent=1))
    fig, ax = plt.subplots(figsize=(8, 4.2), dpi=100)
    dates = pd.to_datetime(frame["date"])
    for column, label, colour in (("hand_area_m2", "hand masks", "black"),
                                  ("model_area_m2", "model (monitor)", "tab:red")):
        key = "hand_m2_per_yr" if column == "hand_area_m2" else "model_m2_per_yr"
        ax.plot(dates, frame[column] / 1e4, marker="o", markersize=3, linewidth=0.8,
                color=colour, label=f"{label}: {rates[key] / 1e4:+.2f} ha/yr (Theil-Sen)")
    hidden = frame[~frame["observed"]]
    ax.plot(pd.to_datetime(hidden["date"]), hidden["model_area_m2"] / 1e4, "o",
            markerfacecolor="none", color="tab:red", label="model, hidden (not in fit)")
    ax.set_ylabel("slump area (ha)")
    ax.set_title("site s002 (Sentinel-2, 10 m): model trained on s003/s004 vs hand masks",
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(out / "timeseries_vs_masks.png")
    print(json.dumps(rates, indent=1))


if __name__ == "__main__":
    main(*(Path(arg) for arg in sys.argv[1:4]))
