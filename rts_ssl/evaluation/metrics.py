"""Pixel metrics (torchmetrics) and object metrics: what mappers care about.

Objects are 8-connected slump regions. Predicted and reference objects are matched one to
one, greedily by descending IoU, when IoU >= a threshold (default 0.3): matched = true
positives, unmatched predictions = false positives (also per 100 km^2 of valid ground),
unmatched references = misses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryF1Score,
    BinaryJaccardIndex,
    BinaryPrecision,
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


@dataclass
class ObjectCounts:
    """Accumulated object-level counts over tiles or scenes."""

    true_positives: int = 0
    false_positives: int = 0
    false_negatives: int = 0
    area_km2: float = 0.0

    def add(self, predicted: np.ndarray, reference: np.ndarray, valid: np.ndarray,
            pixel_area_m2: float, iou_threshold: float = 0.3) -> None:
        """Count one mask pair; predictions outside valid ground are not objects."""
        pred = mask_objects(predicted.astype(bool) & valid.astype(bool))
        ref = mask_objects(reference.astype(bool))
        self.add_objects(pred, ref, float(valid.sum()) * pixel_area_m2 / 1e6, iou_threshold)

    def add_objects(self, predicted: list, reference: list, area_km2: float,
                    iou_threshold: float = 0.3) -> None:
        """Count polygons already extracted (any coordinates, the same for both)."""
        matched = len(match_objects(predicted, reference, iou_threshold))
        self.true_positives += matched
        self.false_positives += len(predicted) - matched
        self.false_negatives += len(reference) - matched
        self.area_km2 += area_km2

    def merge(self, other: ObjectCounts) -> None:
        self.true_positives += other.true_positives
        self.false_positives += other.false_positives
        self.false_negatives += other.false_negatives
        self.area_km2 += other.area_km2

    @property
    def precision(self) -> float:
        return self.true_positives / max(self.true_positives + self.false_positives, 1)

    @property
    def recall(self) -> float:
        return self.true_positives / max(self.true_positives + self.false_negatives, 1)

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def false_positives_per_100km2(self) -> float:
        return 100 * self.false_positives / self.area_km2 if self.area_km2 else 0.0

    def as_dict(self, prefix: str = "object_") -> dict[str, float]:
        return {f"{prefix}precision": self.precision, f"{prefix}recall": self.recall,
                f"{prefix}f1": self.f1,
                f"{prefix}fp_per_100km2": self.false_positives_per_100km2}
