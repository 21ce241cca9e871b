"""What SimCLR and MAE share: optimisation, validation health checks, the encoder to export."""

from __future__ import annotations

import logging

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn
from torchmetrics.aggregation import CatMetric

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
    labels, a kNN balanced accuracy of "tile contains a slump". Embeddings and labels are
    gathered over DDP ranks (``CatMetric``), so every rank scores the whole validation set.
    """

    method = "ssl"

    def __init__(self, encoder: dict, optimizer: dict) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.spec = EncoderSpec(**encoder)
        self.optimizer_cfg = dict(optimizer)
        self.val_features = CatMetric(nan_strategy="disable")
        self.val_labels = CatMetric(nan_strategy="disable")

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
        self.val_features.update(self.encoder(images).detach().float())
        labelled = (~batch["ignore"]).flatten(1).any(dim=1)
        slump = (batch["mask"].bool() & ~batch["ignore"]).flatten(1).any(dim=1)
        self.val_labels.update(torch.where(labelled, slump.long(), -1))

    def on_validation_epoch_end(self) -> None:
        if not self.val_features.update_count:
            return
        features, labels = self.val_features.compute(), self.val_labels.compute().long()
        self.val_features.reset()
        self.val_labels.reset()
        spread, rank = normalized_std(features), effective_rank(features)
        # sync_dist: every rank holds the gathered set, so this averages equal values
        self.log_dict({"val/embedding_std": spread, "val/effective_rank": rank}, sync_dist=True)
        if spread < COLLAPSE_THRESHOLD and not self.trainer.sanity_checking:
            rank_zero_warn(f"EMBEDDING COLLAPSE at epoch {self.current_epoch}: normalised std "
                           f"{spread:.3f} (healthy ~1), effective rank {rank:.1f}")
        known = labels >= 0
        if known.sum() > 5 and len(labels[known].unique()) == 2:
            accuracy = knn_balanced_accuracy(features[known], labels[known])
            self.log("val/knn_slump_balanced_acc", accuracy, sync_dist=True)

    def configure_optimizers(self):
        cfg = self.optimizer_cfg
        optimizer = build_optimizer(self.parameters(), cfg["name"], cfg["lr"],
                                    cfg["weight_decay"])
        total = int(self.trainer.estimated_stepping_batches)
        per_epoch = total // max(self.trainer.max_epochs or 1, 1)
        scheduler = warmup_cosine(optimizer, total, int(cfg["warmup_epochs"] * per_epoch))
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
