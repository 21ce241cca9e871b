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
    input_size: int  # px; timm's img_size (ViTs keep it, CNNs take any size)
    patch_size: int | None = None  # ViT token size (px); None for CNNs

    @property
    def is_vit(self) -> bool:
        return self.patch_size is not None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> EncoderSpec:
        """From an encoder.yaml ``architecture`` (exports before 2026-11 say ``img_size``)."""
        data = dict(data)
        if "img_size" in data:
            data["input_size"] = data.pop("img_size")
        return cls(**data)


def build_encoder(spec: EncoderSpec) -> nn.Module:
    """A timm backbone returning pooled features (``num_features`` wide), random init."""
    kwargs = {"img_size": spec.input_size, "patch_size": spec.patch_size} if spec.is_vit else {}
    return timm.create_model(spec.timm_name, pretrained=False, num_classes=0,
                             in_chans=spec.in_chans, **kwargs)
