"""Encoders from timm with any number of input bands and no pretrained download."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import timm
from torch import nn


@dataclass(frozen=True)
class EncoderSpec:
    """What it takes to rebuild an encoder: recorded in every exported encoder.yaml."""

    name: str  # our short name, e.g. resnet18, vit_small
    timm_name: str
    in_chans: int
    img_size: int
    patch_size: int | None = None  # ViTs only

    @property
    def is_vit(self) -> bool:
        return self.patch_size is not None

    def to_dict(self) -> dict:
        return asdict(self)


def build_encoder(spec: EncoderSpec) -> nn.Module:
    """A timm backbone returning pooled features (``num_features`` wide), random init."""
    kwargs = {"img_size": spec.img_size, "patch_size": spec.patch_size} if spec.is_vit else {}
    return timm.create_model(spec.timm_name, pretrained=False, num_classes=0,
                             in_chans=spec.in_chans, **kwargs)
