"""What SimCLR and MAE share: optimisation, validation health checks, the encoder to export."""

from __future__ import annotations

import logging

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn

from rts_ssl.models.embedding_health import (
    COLLAPSE_THRESHOLD,
    effective_rank,
    knn_balanced_accuracy,
    normalized_std,
)
from rts_ssl.models.encoders import EncoderSpec
from rts_ssl.models.optim import build_optimizer, warmup_cosine

log = logging.getLogger(__name__)


class SSLTask(pl.LightningModule):
    """Base of the self-supervised tasks; subclasses define ``ssl_loss`` and ``encoder``.

    Validation computes the same loss on held-out tiles (the monitored metric), the spread
    and effective rank of the encoder's embeddings (collapse guard) and, when tiles carry
    labels, a kNN balanced accuracy of "tile contains a slump".
    """

    method = "ssl"

    def __init__(self, encoder: dict, optimizer: dict) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.spec = EncoderSpec(**encoder)
        self.optimizer_cfg = dict(optimizer)
        self._features: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []

    @property
    def encoder(self) -> nn.Module:
        raise NotImplementedError

    def ssl_loss(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.ssl_loss(batch["image"])
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, sync_dist=True)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        images = batch["image"]
        self.log("val/loss", self.ssl_loss(images), prog_bar=True, sync_dist=True)
        self._features.append(self.encoder(images).detach().float().cpu())
        labelled = (~batch["ignore"]).flatten(1).any(dim=1)
        slump = (batch["mask"].bool() & ~batch["ignore"]).flatten(1).any(dim=1)
        self._labels.append(torch.where(labelled, slump.long(), -1).cpu())

    def on_validation_epoch_end(self) -> None:
        if not self._features:
            return
        features, labels = torch.cat(self._features), torch.cat(self._labels)
        self._features, self._labels = [], []
        spread, rank = normalized_std(features), effective_rank(features)
        self.log_dict({"val/embedding_std": spread, "val/effective_rank": rank})
        if spread < COLLAPSE_THRESHOLD and not self.trainer.sanity_checking:
            rank_zero_warn(f"EMBEDDING COLLAPSE at epoch {self.current_epoch}: normalised std "
                           f"{spread:.3f} (healthy ~1), effective rank {rank:.1f}")
        known = labels >= 0
        if known.sum() > 5 and len(labels[known].unique()) == 2:
            accuracy = knn_balanced_accuracy(features[known], labels[known])
            self.log("val/knn_slump_balanced_acc", accuracy)

    def configure_optimizers(self):
        cfg = self.optimizer_cfg
        optimizer = build_optimizer(self.parameters(), cfg["name"], cfg["lr"],
                                    cfg["weight_decay"])
        total = int(self.trainer.estimated_stepping_batches)
        per_epoch = total // max(self.trainer.max_epochs or 1, 1)
        scheduler = warmup_cosine(optimizer, total, int(cfg["warmup_epochs"] * per_epoch))
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
