"""What IoU do the Sentinel-2 chips' own labels allow? Two references for the 0.45 target.

1. Edge error: a detector that finds every slump and errs by one pixel all round (grown,
   shrunk or shifted), on the 10 m grid and on the 5 m grid the models train on.
2. Label agreement: the chip masks against independent labellings of the same ground in
   ../shared/data/rts_labels (Nitze et al. 2021 polygons on PlanetScope, several dates per
   chip, for nw_canada; Nitze's iteration 005 polygons for 12 alaska_north chips), scored
   with the test's own metrics (pooled pixel IoU, object F1 at object IoU 0.3).

Usage: python experiments/label_efficiency_s2_chips/label_limits.py [shared data dir]
(about 40 s on one core; prints two tables and two lines).
"""

from __future__ import annotations

import collections
import csv
import itertools
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import torch
import torch.nn.functional as F
from rasterio.transform import IDENTITY, array_bounds
from shapely.geometry import box

from rts_ssl.data.labels import rasterize_polygons
from rts_ssl.data.vectorise import mask_objects
from rts_ssl.evaluation.metrics import ObjectCounts

SHARED = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data")
CHIPS = SHARED / "sentinel2_rts_chips"
NITZE_2021 = (SHARED / "rts_labels/arts/raw_data/Nitze_dataset_2021(Nitze2021)"
              / "GT_Set_Nitze_etal_2021_TrainingSet_RTS.shp")
ITERATION_005 = (SHARED / "rts_labels/ml_training_labels/retrogressive_thaw_slumps"
                 / "TrainingLabel_RTS_PlanetScope_Nitze_iteration005"
                 / "TrainingLabel_RTS_PlanetScope_Nitze_iteration005.gpkg")
EDGE_ERRORS = {
    "grown": lambda m: F.max_pool2d(m, 3, 1, 1),
    "shrunk": lambda m: 1 - F.max_pool2d(1 - m, 3, 1, 1),
    "shifted": lambda m: torch.roll(m, 1, dims=3),
}


def chips(region: str | None = None):
    """(region, mask, its grid) of every chip, or of one region's."""
    with open(CHIPS / "chips.csv") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        if region in (None, row["region"]):
            with rasterio.open(CHIPS / "masks" / f"{row['chip']}.tif") as f:
                yield row["region"], f.read(1) > 0, (f.shape, f.transform, f.crs)


def edge_error_table() -> None:
    sums = collections.defaultdict(lambda: np.zeros((2 * len(EDGE_ERRORS), 2)))
    for region, mask, _ in chips():
        m10 = torch.from_numpy(mask.astype(np.float32))[None, None]
        m5 = F.interpolate(m10, scale_factor=2, mode="nearest")
        perturbed = [(m, error(m)) for m in (m10, m5) for error in EDGE_ERRORS.values()]
        for k, (m, p) in enumerate(perturbed):
            sums[region][k] += (float((m * p).sum()), float(((m + p) > 0).sum()))
    names = " | ".join(EDGE_ERRORS)
    print(f"| region | 10 m: {names} | 5 m: {names} |")
    for region, s in sorted(sums.items()):
        print(f"| {region} | " + " | ".join(f"{i / u:.2f}" for i, u in s) + " |")


def burn(polygons: gpd.GeoDataFrame, grid) -> np.ndarray:
    shape, transform, _ = grid
    return rasterize_polygons(polygons.geometry, transform, shape) > 0


def overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(intersection, union) pixel counts of two masks: summed, then divided, the IoU pools."""
    return np.array([(a & b).sum(), (a | b).sum()])


def on_chip(polygons: gpd.GeoDataFrame, grid) -> gpd.GeoDataFrame:
    shape, transform, crs = grid
    polygons = polygons.to_crs(crs)
    return polygons[polygons.intersects(box(*array_bounds(*shape, transform)))]


def agreement(pairs: list[tuple[np.ndarray, np.ndarray]]) -> str:
    """Pooled pixel IoU; object F1 (first of a pair the reference); pixel IoU within the
    slumps both labellings drew (image coverage and choice of slumps set aside)."""
    pooled, shared = np.zeros(2), np.zeros(2)
    objects = ObjectCounts(0.3)
    for a, b in pairs:
        pooled += overlap(a, b)
        objects.add_masks(b, a, np.ones_like(a), 100.0)
        for slump in mask_objects(a | b):
            c = rasterize_polygons([slump], IDENTITY, a.shape) > 0
            if (c & a).any() and (c & b).any():
                shared += overlap(c & a, c & b)
    o = objects.compute()
    return (f"| {len(pairs)} | {pooled[0] / pooled[1]:.2f} | {o['object_f1']:.2f} "
            f"| {shared[0] / shared[1]:.2f} |")


def best_shift_agreement(pairs: list[tuple[np.ndarray, np.ndarray]], reach: int = 2) -> str:
    """Pooled pixel IoU once the second of each pair is shifted (up to ``reach`` pixels)
    to fit the first best: how much of the disagreement is misregistration."""
    pooled, unshifted = np.zeros(2), 0
    offsets = list(itertools.product(range(-reach, reach + 1), repeat=2))
    for a, b in pairs:
        fits = [overlap(a, np.roll(b, offset, (0, 1))) for offset in offsets]
        k = max(range(len(offsets)), key=lambda i: fits[i][0] / max(fits[i][1], 1))
        pooled += fits[k]
        unshifted += offsets[k] == (0, 0)
    return (f"pixel IoU {pooled[0] / pooled[1]:.2f} with each pair shifted to fit best "
            f"(within {reach} px), {unshifted / len(pairs):.0%} of the pairs best unshifted")


def agreement_table() -> None:
    nitze, iteration_005 = gpd.read_file(NITZE_2021), gpd.read_file(ITERATION_005)
    mask_vs_date, date_vs_date, alaska, best_date, outside, total = [], [], [], [], 0, 0
    for _, mask, grid in chips("nw_canada"):
        dates = [burn(g, grid) for _, g in on_chip(nitze, grid).groupby("image_date")]
        mask_vs_date += [(mask, d) for d in dates]
        date_vs_date += list(itertools.combinations(dates, 2))
        best_date.append(max(i / u for i, u in (overlap(mask, d) for d in dates)))
        outside += (mask & ~np.logical_or.reduce(dates)).sum()
        total += mask.sum()
    for _, mask, grid in chips("alaska_north"):
        polygons = on_chip(iteration_005, grid)
        if len(polygons):
            alaska.append((mask, burn(polygons, grid)))
    print(f"nw_canada: each chip mask against its best-matching date's polygons: IoU "
          f"{min(best_date):.2f}-{max(best_date):.2f}, {sum(b > 0.84 for b in best_date)} of "
          f"{len(best_date)} chips above 0.84; {outside} of {total} mask pixels outside "
          "every date's polygons")
    print("| labellings compared | pairs | pixel IoU | object F1 "
          "| pixel IoU within shared slumps |")
    print("| nw_canada: chip mask vs one PlanetScope date (Nitze 2021) " + agreement(mask_vs_date))
    print("| nw_canada: one date vs another, same chip " + agreement(date_vs_date))
    print("| alaska_north: chip mask vs iteration 005 (2021 dates) " + agreement(alaska))
    print("nw_canada, one date vs another: " + best_shift_agreement(date_vs_date))


if __name__ == "__main__":
    for needed in (CHIPS / "chips.csv", NITZE_2021, ITERATION_005):
        if not needed.is_file():
            sys.exit(f"error: {needed}: not found (name the shared data folder as the argument)")
    edge_error_table()
    agreement_table()
