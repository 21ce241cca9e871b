"""SimCLR on multispectral tiles with lightly's projection head and NT-Xent loss."""

from __future__ import annotations

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from torch import nn

from rts_ssl.augment import ssl_view_transform
from rts_ssl.models.encoders import build_encoder
from rts_ssl.models.ssl_task import SSLTask


class SimCLRTask(SSLTask):
    """Two augmented views of each tile (or two dates of one place) are positives.

    The loss gathers negatives across processes under DDP (``gather_distributed``).
    """

    method = "simclr"

    def __init__(self, encoder: dict, optimizer: dict, temperature: float = 0.1,
                 projection_dim: int = 128, hidden_dim: int = 512,
                 views: dict | None = None) -> None:
        super().__init__(encoder, optimizer)
        self.backbone = build_encoder(self.spec)
        self.head = SimCLRProjectionHead(self.backbone.num_features, hidden_dim, projection_dim)
        self.criterion = NTXentLoss(temperature=temperature, gather_distributed=True)
        self.views = ssl_view_transform(self.spec.input_size, **(views or {}))

    @property
    def encoder(self) -> nn.Module:
        return self.backbone

    def ssl_loss(self, images: torch.Tensor, positives: torch.Tensor | None = None):
        with torch.no_grad():
            first = self.views(images)
            second = self.views(images if positives is None else positives)
        return self.criterion(self.head(self.backbone(first)), self.head(self.backbone(second)))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.ssl_loss(batch["image"], batch.get("positive"))
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, sync_dist=True)
        return loss
