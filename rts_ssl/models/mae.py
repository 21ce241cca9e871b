"""Masked autoencoder with lightly's masked ViT encoder and decoder.

The encoder sees only the visible 25 % of patch tokens: that is MAE's speed advantage.
The decoder predicts every masked patch's pixels in all bands (patch^2 x bands values),
against per-patch normalised targets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightly.models import utils
from lightly.models.modules import (
    MaskedVisionTransformerDecoderTIMM,
    MaskedVisionTransformerTIMM,
)
from torch import nn

from rts_ssl.augment import mae_input_transform
from rts_ssl.errors import InputError
from rts_ssl.models.encoders import build_encoder
from rts_ssl.models.ssl_task import SSLTask


class MAETask(SSLTask):
    method = "mae"

    def __init__(self, encoder: dict, optimizer: dict, mask_ratio: float = 0.75,
                 decoder_dim: int = 128, decoder_depth: int = 2, decoder_heads: int = 4,
                 norm_pix_loss: bool = True) -> None:
        super().__init__(encoder, optimizer)
        if not self.spec.is_vit:
            raise InputError(f"encoder={self.spec.name}", "MAE needs a ViT encoder "
                             "(e.g. encoder=vit_tiny or vit_small)")
        vit = build_encoder(self.spec)
        self.backbone = MaskedVisionTransformerTIMM(vit=vit)
        self.decoder_embed = nn.Linear(vit.embed_dim, decoder_dim)
        self.decoder = MaskedVisionTransformerDecoderTIMM(
            num_patches=vit.patch_embed.num_patches, embed_dim=decoder_dim,
            depth=decoder_depth, num_heads=decoder_heads,
            num_prefix_tokens=vit.num_prefix_tokens)
        self.decoder_pred = nn.Linear(decoder_dim, self.spec.patch_size**2 * self.spec.in_chans)
        self.mask_ratio, self.norm_pix_loss = mask_ratio, norm_pix_loss
        self.prefix = vit.num_prefix_tokens
        self.augment = mae_input_transform(self.spec.input_size)

    @property
    def encoder(self) -> nn.Module:
        return self.backbone.vit

    def ssl_loss(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            images = self.augment(images)
        batch, length = len(images), self.backbone.sequence_length
        idx_keep, idx_mask = utils.random_token_mask((batch, length), self.mask_ratio,
                                                     device=images.device)
        encoded = self.backbone.encode(images, idx_keep=idx_keep)
        tokens = utils.repeat_token(self.decoder.mask_token, (batch, length))
        tokens = utils.set_at_index(tokens, idx_keep, self.decoder_embed(encoded).type_as(tokens))
        predicted = self.decoder_pred(utils.get_at_index(self.decoder(tokens), idx_mask))
        target = utils.get_at_index(utils.patchify(images, self.spec.patch_size),
                                    idx_mask - self.prefix)
        if self.norm_pix_loss:
            mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6).sqrt()
        return F.mse_loss(predicted, target)
