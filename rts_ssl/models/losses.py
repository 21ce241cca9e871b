"""Loss for rare positives: BCE + soft Dice, both over labelled pixels only.

Why both: with ~0.1 % slump pixels, BCE alone is dominated by easy background and learns to
say "no slump"; Dice is insensitive to the background count and rewards overlap, but alone
gives noisy gradients early on. The sum trains stably (common for RTS segmentation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bce_dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore: torch.Tensor,
                  dice_weight: float = 1.0, smooth: float = 1.0) -> torch.Tensor:
    """``logits`` (B, 1, H, W); ``target`` and ``ignore`` (B, H, W)."""
    logits = logits.squeeze(1)
    valid = (~ignore.bool()).float()
    target = target.float()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    bce = (bce * valid).sum() / valid.sum().clamp_min(1)
    prob = torch.sigmoid(logits) * valid
    intersection = (prob * target * valid).sum()
    dice = 1 - (2 * intersection + smooth) / (prob.sum() + (target * valid).sum() + smooth)
    return bce + dice_weight * dice
