"""Segmentation networks on (pretrained) encoders: U-Net for CNNs, a feature pyramid for ViTs.

Modes: ``linear`` (frozen encoder, 1x1 head on its deepest features), ``frozen`` (frozen
encoder, trained decoder), ``full`` (everything trained; the encoder at a lower rate).
"""

from __future__ import annotations

from collections.abc import Sequence

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

from rts_ssl.errors import InputError
from rts_ssl.models.encoders import EncoderSpec, build_encoder
from rts_ssl.models.spectral_rule import SpectralRule

MODES = ("linear", "frozen", "full")


SMP_DECODER = (256, 128, 64, 32, 16)  # smp's default U-Net decoder widths


class CNNUNet(nn.Module):
    """smp U-Net around the same timm backbone (``tu-<name>``): our weights load 1:1.

    ``decoder_channels`` sets the decoder's widths, deepest first: on CPUs the decoder is
    most of a training step (smp's default 256 .. 16 costs ~60 % of it at 128 px)."""

    def __init__(self, spec: EncoderSpec, linear: bool = False,
                 decoder_channels: Sequence[int] = SMP_DECODER) -> None:
        super().__init__()
        self.unet = smp.Unet(encoder_name=f"tu-{spec.timm_name}", encoder_weights=None,
                             in_channels=spec.in_chans, classes=1,
                             decoder_channels=tuple(decoder_channels))
        self.linear_head = nn.Conv2d(self.unet.encoder.out_channels[-1], 1, 1) if linear else None

    @property
    def backbone(self) -> nn.Module:
        return self.unet.encoder.model

    def decoder_parameters(self):
        if self.linear_head is not None:
            return list(self.linear_head.parameters())
        return [*self.unet.decoder.parameters(), *self.unet.segmentation_head.parameters()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and the feature map the head reads (per-pixel embeddings for PixelDINO)."""
        if self.linear_head is None:
            self.unet.check_input_shape(x)
            features = self.unet.decoder(self.unet.encoder(x))
            return self.unet.segmentation_head(features), features
        deepest = self.unet.encoder(x)[-1]
        logits = F.interpolate(self.linear_head(deepest), size=x.shape[-2:], mode="bilinear")
        return logits, deepest

    @property
    def feature_channels(self) -> int:
        if self.linear_head is None:
            return self.unet.segmentation_head[0].in_channels
        return self.unet.encoder.out_channels[-1]


class ViTPyramid(nn.Module):
    """Simple feature pyramid (ViTDet-style) from four intermediate ViT blocks."""

    def __init__(self, spec: EncoderSpec, width: int = 64, linear: bool = False) -> None:
        super().__init__()
        self.vit = build_encoder(spec)
        dim = self.vit.embed_dim
        if linear:
            self.head = nn.Conv2d(dim, 1, 1)
            self.scales = None
            return
        # token stride s -> strides s/4, s/2, s, 2s
        self.scales = nn.ModuleList([
            nn.Sequential(nn.ConvTranspose2d(dim, width, 2, 2), nn.GELU(),
                          nn.ConvTranspose2d(width, width, 2, 2)),
            nn.ConvTranspose2d(dim, width, 2, 2),
            nn.Conv2d(dim, width, 1),
            nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(dim, width, 1)),
        ])
        self.head = nn.Sequential(nn.Conv2d(4 * width, width, 3, padding=1),
                                  nn.BatchNorm2d(width), nn.ReLU(), nn.Conv2d(width, 1, 1))

    @property
    def backbone(self) -> nn.Module:
        return self.vit

    def decoder_parameters(self):
        params = list(self.head.parameters())
        return params + (list(self.scales.parameters()) if self.scales is not None else [])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and the feature map the head reads (per-pixel embeddings for PixelDINO)."""
        features = self.vit.forward_intermediates(x, indices=4, output_fmt="NCHW",
                                                  intermediates_only=True)
        if self.scales is None:
            pyramid = features[-1]
        else:
            size = features[0].shape[-1] * 4
            pyramid = torch.cat([F.interpolate(scale(f), size=(size, size), mode="bilinear")
                                 for scale, f in zip(self.scales, features, strict=True)], 1)
        logits = F.interpolate(self.head(pyramid), size=x.shape[-2:], mode="bilinear")
        return logits, pyramid

    @property
    def feature_channels(self) -> int:
        return self.vit.embed_dim if self.scales is None else 4 * self.scales[2].out_channels


def build_segmentation(spec: EncoderSpec, mode: str,
                       decoder_channels: Sequence[int] | None = None) -> nn.Module:
    """The network for an encoder spec and fine-tuning mode (``linear|frozen|full``);
    ``decoder_channels``: the U-Net decoder's widths on CNNs (default: smp's)."""
    if mode not in MODES:
        raise ValueError(f"unknown fine-tuning mode {mode!r} ({', '.join(MODES)})")
    if spec.name == SpectralRule.name:
        return SpectralRule(spec.in_chans)
    linear = mode == "linear"
    if spec.is_vit:
        return ViTPyramid(spec, linear=linear)
    return CNNUNet(spec, linear=linear, decoder_channels=decoder_channels or SMP_DECODER)


def load_backbone(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy exported encoder weights into the network's backbone; every tensor must fit."""
    own = model.backbone.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise InputError(source, f"encoder weights do not fit the network ({len(missing)} "
                         f"missing, {len(unexpected)} unexpected tensors)")
    model.backbone.load_state_dict(state, strict=True)
