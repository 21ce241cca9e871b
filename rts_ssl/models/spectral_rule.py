"""A tuned spectral rule: slump where a vegetation index is low AND the ground is bright.

Slumps are bare, bright scars in green tundra, so this rule is a surprisingly strong baseline
on some sites; a curve shows it beside the models to say whether learning adds anything.
The index is NDVI when a NIR band is present, else the green-red index (G - R) / (G + R) of
RGB images; brightness is the mean of the visible bands, in the data's own units. Both
thresholds are fitted on the training pixels (maximum F1 over a 64 x 64 grid), so the rule
sees exactly the labels a model would. ``encoder=spectral_rule`` puts it on any curve.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from rts_ssl.data.normalization import BandStats
from rts_ssl.data.sensors import band_indexes
from rts_ssl.errors import InputError

NAME = "spectral_rule"
ROLES = ("blue", "green", "red", "nir")
VISIBLE = ("blue", "green", "red")


class SpectralRule(nn.Module):
    """Logits +10 where ``index <= index_max`` and ``brightness >= brightness_min``, else -10.

    Everything it needs (band roles, normalisation to undo, thresholds) is in buffers, so an
    exported rule predicts like any model.
    """

    name = NAME

    def __init__(self, in_chans: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_chans))
        self.register_buffer("std", torch.ones(in_chans))
        self.register_buffer("roles", torch.full((len(ROLES),), -1, dtype=torch.long))
        self.register_buffer("index_max", torch.tensor(-1.0))
        self.register_buffer("brightness_min", torch.tensor(0.0))

    def configure(self, bands: Sequence[str], stats: BandStats) -> tuple[float, float]:
        """Band roles by name and the normalisation to undo (before fitting); returns the
        range brightness can take (the visible bands' clipping range)."""
        found = band_indexes(bands, ROLES)
        if found[1] is None or found[2] is None:
            raise InputError("encoder=spectral_rule", "needs green and red bands (bands: "
                             f"{', '.join(bands)})")
        self.roles.copy_(torch.tensor([-1 if i is None else i for i in found]))
        self.mean.copy_(torch.tensor(stats.mean))
        self.std.copy_(torch.tensor(stats.std))
        visible = [i for role, i in zip(ROLES, found, strict=True) if role in VISIBLE and
                   i is not None]
        return min(stats.low[i] for i in visible), max(stats.high[i] for i in visible)

    def features(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(index, brightness), each (B, H, W), from normalised images."""
        raw = image * self.std[:, None, None] + self.mean[:, None, None]
        band = {role: raw[:, int(i)] for role, i in zip(ROLES, self.roles, strict=True)
                if int(i) >= 0}
        other = band.get("nir", band["green"])  # NDVI, or the green-red index without NIR
        index = (other - band["red"]) / (other + band["red"]).abs().clamp_min(1e-6)
        visible = [band[r] for r in VISIBLE if r in band]
        return index.clamp(-1, 1), torch.stack(visible).mean(dim=0)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        index, brightness = self.features(image)
        slump = (index <= self.index_max) & (brightness >= self.brightness_min)
        return (slump.float() * 20 - 10).unsqueeze(1)
