"""Optimisers and the warm-up + cosine schedule shared by every training task."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from lightly.utils.lars import LARS
from lightly.utils.scheduler import CosineWarmupScheduler


def build_optimizer(params: Iterable, name: str, lr: float, weight_decay: float):
    """AdamW (robust at small CPU batches) or LARS (SimCLR at large batch sizes)."""
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "lars":
        return LARS(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r} (adamw, lars)")


def warmup_cosine(optimizer, total_steps: int, warmup_steps: int) -> CosineWarmupScheduler:
    """Linear warm-up to the base rate, then cosine decay to zero, per step (lightly's
    schedule; the warm-up is clipped so that a tiny run still decays)."""
    total_steps = max(total_steps, 1)
    warmup_steps = min(max(warmup_steps, 0), total_steps - 1)
    return CosineWarmupScheduler(optimizer, warmup_steps, total_steps, end_value=0.0)
