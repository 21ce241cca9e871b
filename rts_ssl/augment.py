"""Multispectral augmentations on normalised tensors, batched, on the training device.

Not lightly's RGB/PIL transforms: those quantise to 8 bits and know only 3 channels. Here
everything is a kornia module or plain torch on ``(B, C, H, W)`` float tensors, for any C.
Per-band gain and offset jitter imitates acquisition and product-level (L1C vs L2A)
differences, which is where models trained on one date or region break on the next.
"""

from __future__ import annotations

import kornia.augmentation as K
import torch
from torch import nn


class BandJitter(nn.Module):
    """Per-sample, per-band gain (contrast) and offset (brightness) in normalised units."""

    def __init__(self, gain: float = 0.2, offset: float = 0.2, p: float = 0.8) -> None:
        super().__init__()
        self.gain, self.offset, self.p = gain, offset, p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        apply = (torch.rand(b, 1, 1, 1, device=x.device) < self.p).to(x.dtype)
        gain = 1 + self.gain * (2 * torch.rand(b, c, 1, 1, device=x.device) - 1) * apply
        offset = self.offset * (2 * torch.rand(b, c, 1, 1, device=x.device) - 1) * apply
        return x * gain + offset


class BandDropout(nn.Module):
    """Zero one random band of a sample with probability ``p`` (robustness to a bad band)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p <= 0:
            return x
        b, c = x.shape[:2]
        drop = torch.rand(b, device=x.device) < self.p
        band = torch.randint(0, c, (b,), device=x.device)
        keep = torch.ones(b, c, 1, 1, device=x.device, dtype=x.dtype)
        keep[drop, band[drop]] = 0
        return x * keep


def ssl_view_transform(size: int, crop_scale: tuple[float, float] = (0.3, 1.0),
                       **photometric: float) -> nn.Module:
    """One random view: crop + flips + 90-degree rotations, then the photometric part
    (:func:`strong_view_transform`: band jitter + blur + noise + band dropout)."""
    return nn.Sequential(
        K.RandomResizedCrop((size, size), scale=tuple(crop_scale)),
        K.RandomHorizontalFlip(),
        K.RandomVerticalFlip(),
        K.RandomRotation90(times=(0, 3)),
        *strong_view_transform(**photometric),
    )


def strong_view_transform(
    band_gain: float = 0.2,
    band_offset: float = 0.2,
    blur_p: float = 0.3,
    noise_std: float = 0.05,
    band_dropout: float = 0.0,
) -> nn.Sequential:
    """The photometric part of a view: band jitter + blur + noise + band dropout. Pixels
    stay where they are, so a teacher's per-pixel targets on the original crop apply to
    the student's strong view of it (semi-supervised fine-tuning)."""
    return nn.Sequential(
        BandJitter(band_gain, band_offset),
        K.RandomGaussianBlur((5, 5), sigma=(0.1, 1.5), p=blur_p),
        K.RandomGaussianNoise(std=noise_std, p=0.5),
        BandDropout(band_dropout),
    )


def mae_input_transform(size: int) -> nn.Module:
    """MAE sees mild views: crop, flips and rotations, no photometric change."""
    return nn.Sequential(
        K.RandomResizedCrop((size, size), scale=(0.5, 1.0)),
        K.RandomHorizontalFlip(),
        K.RandomVerticalFlip(),
        K.RandomRotation90(times=(0, 3)),
    )


class SegmentationAugment(nn.Module):
    """Fine-tuning views: per sample, the same random flips and 90-degree rotation of the
    image and its label planes (exact: no resampling of labels), then per-band gain and
    offset jitter of the image, the acquisition and product-level shifts between the
    training regions and a new one. ``band_dropout``: the probability of zeroing one band of
    a sample (its mean, after normalisation), so that no single cue (e.g. relative elevation,
    weak in low-relief regions) carries the prediction alone."""

    def __init__(self, band_gain: float = 0.1, band_offset: float = 0.1,
                 band_dropout: float = 0.0) -> None:
        super().__init__()
        self.jitter = BandJitter(band_gain, band_offset)
        self.dropout = BandDropout(band_dropout)

    def forward(self, image: torch.Tensor, *planes: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``image`` (B, C, H, W) and planes (B, H, W) of square crops, augmented alike."""
        batch = len(image)
        flips = torch.rand(batch, 2, device=image.device) < 0.5
        turns = torch.randint(0, 4, (batch,), device=image.device)
        out = []
        for tensor in (image, *planes):
            x = tensor if tensor.dim() == 4 else tensor.unsqueeze(1)
            x = torch.where(flips[:, 0, None, None, None], x.flip(-1), x)
            x = torch.where(flips[:, 1, None, None, None], x.flip(-2), x)
            turned = [x, *(torch.rot90(x, k, dims=(-2, -1)) for k in (1, 2, 3))]
            x = torch.stack(turned)[turns, torch.arange(batch, device=image.device)]
            out.append(x if tensor.dim() == 4 else x.squeeze(1))
        out[0] = self.dropout(self.jitter(out[0]))
        return tuple(out)
