"""Pixel metrics (torchmetrics) and object metrics: what mappers care about.

Objects are 8-connected slump regions. Predicted and reference objects are matched one to
one, greedily by descending IoU, when IoU >= a threshold (default 0.3): matched = true
positives, unmatched predictions = false positives (also per 100 km^2 of valid ground),
unmatched references = misses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import shapely
import torch
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import (
    BinaryF1Score,
    BinaryJaccardIndex,
    BinaryPrecision,
    BinaryPrecisionRecallCurve,
    BinaryRecall,
)

from rts_ssl.data.vectorise import mask_objects

IGNORE = 255


def pixel_metrics() -> MetricCollection:
    """IoU, F1, precision and recall of the slump class; target pixels = IGNORE are skipped."""
    kwargs = {"ignore_index": IGNORE, "zero_division": 0}
    return MetricCollection({
        "iou": BinaryJaccardIndex(ignore_index=IGNORE, zero_division=0),
        "f1": BinaryF1Score(**kwargs),
        "precision": BinaryPrecision(**kwargs),
        "recall": BinaryRecall(**kwargs),
    })


def threshold_sweep(thresholds: Sequence[float]) -> BinaryPrecisionRecallCurve:
    """Pixel precision and recall at each probability threshold (``probability >= t``, as
    predicted slumps): the cut that fits a new region, given a few of its labelled scenes."""
    return BinaryPrecisionRecallCurve(thresholds=[float(t) for t in thresholds],
                                      ignore_index=IGNORE)


def sweep_summary(sweep: BinaryPrecisionRecallCurve) -> list[dict]:
    """IoU, F1, precision and recall of the slump class at each threshold of a sweep."""
    precision, recall, thresholds = (values.tolist() for values in sweep.compute())
    rows = []
    for threshold, p, r in zip(thresholds, precision, recall, strict=False):  # +1 end point
        p = 0.0 if math.isnan(p) else p  # no pixel predicted: no true positive either
        hit = p > 0 and r > 0
        rows.append({"threshold": round(threshold, 6),
                     "iou": p * r / (p + r - p * r) if hit else 0.0,
                     "f1": 2 * p * r / (p + r) if hit else 0.0, "precision": p, "recall": r})
    return rows


def with_ignore(target: torch.Tensor, ignore: torch.Tensor) -> torch.Tensor:
    """Target with ignored pixels set to IGNORE (what :func:`pixel_metrics` expects)."""
    return target.long().masked_fill(ignore.bool(), IGNORE)


def match_objects(predicted: list, reference: list, iou_threshold: float = 0.3):
    """One-to-one matches ``(i_pred, i_ref, iou)``, greedy by IoU, IoU >= threshold."""
    if not predicted or not reference:
        return []
    tree = shapely.STRtree(reference)
    pairs = []
    for i, pred in enumerate(predicted):
        for j in tree.query(pred, predicate="intersects"):
            inter = pred.intersection(reference[j]).area
            iou = inter / (pred.area + reference[j].area - inter)
            if iou >= iou_threshold:
                pairs.append((iou, i, int(j)))
    used_pred, used_ref, matches = set(), set(), []
    for iou, i, j in sorted(pairs, reverse=True):
        if i not in used_pred and j not in used_ref:
            used_pred.add(i)
            used_ref.add(j)
            matches.append((i, j, iou))
    return matches


class ObjectCounts(Metric):
    """Object-level counts over tiles or scenes. A torchmetrics ``Metric``: under DDP the
    counts of every rank are summed before :meth:`compute`."""

    full_state_update = False
    COUNTS = ("true_positives", "false_positives", "false_negatives")

    def __init__(self, iou_threshold: float = 0.3) -> None:
        super().__init__()
        self.iou_threshold = iou_threshold
        for name in self.COUNTS:
            self.add_state(name, torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("area_km2", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, predicted: list, reference: list, area_km2: float) -> None:
        """Count polygons of one tile or scene (any coordinates, the same for both)."""
        matched = len(match_objects(predicted, reference, self.iou_threshold))
        self.true_positives += matched
        self.false_positives += len(predicted) - matched
        self.false_negatives += len(reference) - matched
        self.area_km2 += area_km2

    def add_masks(self, predicted: np.ndarray, reference: np.ndarray, valid: np.ndarray,
                  pixel_area_m2: float) -> None:
        """Count one mask pair; predictions outside valid ground are not objects."""
        self.update(mask_objects(predicted.astype(bool) & valid.astype(bool)),
                    mask_objects(reference.astype(bool)),
                    float(valid.sum()) * pixel_area_m2 / 1e6)

    def compute(self) -> dict[str, float]:
        tp, fp, fn = (int(getattr(self, name)) for name in self.COUNTS)
        precision, recall = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
        area = float(self.area_km2)
        return {"object_precision": precision, "object_recall": recall,
                "object_f1": 2 * precision * recall / (precision + recall)
                if precision + recall else 0.0,
                "object_fp_per_100km2": 100 * fp / area if area else 0.0}


class SceneMosaic:
    """Object counts of whole scenes from their evaluation windows.

    Each window's counted pixels are pasted into its scene (``layout``: a
    :class:`~rts_ssl.data.dataset.WindowLayout`), and a scene's objects go to ``objects`` once
    its last window is in: a slump that window borders cut counts once, not once per piece.
    Only scenes with windows still to come are held in memory.
    """

    def __init__(self, layout, objects: ObjectCounts, pixel_area_m2: float) -> None:
        self.layout, self.objects, self.pixel_area_m2 = layout, objects, pixel_area_m2
        self.missing = np.bincount(layout.scenes, minlength=len(layout.shapes))
        self.canvases: dict[int, np.ndarray] = {}

    def add(self, positions: np.ndarray, predicted: np.ndarray, reference: np.ndarray,
            counted: np.ndarray) -> None:
        """Windows at dataset ``positions``: predicted and reference slump masks and the
        pixels they count (labelled, not counted by another window)."""
        size = self.layout.size
        for position, pred, ref, ok in zip(positions, predicted, reference, counted,
                                           strict=True):
            scene = int(self.layout.scenes[position])
            canvas = self.canvases.get(scene)
            if canvas is None:
                canvas = self.canvases[scene] = np.zeros((3, *self.layout.shapes[scene]), bool)
            row, col = self.layout.origins[position]
            window = canvas[:, row:row + size, col:col + size]
            window |= np.stack([pred & ok, ref & ok, ok])
            self.missing[scene] -= 1
            if not self.missing[scene]:
                self._count(self.canvases.pop(scene))

    def finish(self) -> None:
        """Count the scenes whose windows did not all come (e.g. a limited test run)."""
        for canvas in self.canvases.values():
            self._count(canvas)
        self.canvases.clear()

    def _count(self, canvas: np.ndarray) -> None:
        self.objects.add_masks(canvas[0], canvas[1], canvas[2], self.pixel_area_m2)
