"""Few-label slump segmentation: training, threshold choice on validation, test metrics."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torchmetrics import MeanMetric

from rts_ssl.augment import SegmentationAugment
from rts_ssl.data.normalization import BandStats
from rts_ssl.evaluation.metrics import (
    IGNORE,
    ObjectCounts,
    SceneMosaic,
    pixel_metrics,
    sweep_summary,
    threshold_sweep,
    with_ignore,
)
from rts_ssl.models.encoders import EncoderSpec
from rts_ssl.models.losses import bce_dice_loss
from rts_ssl.models.optim import warmup_cosine
from rts_ssl.models.segmentation import build_segmentation

THRESHOLDS = np.round(np.arange(0.05, 0.96, 0.05), 2)
BINS = 64  # spectral rule: grid of index x brightness thresholds


class SegmentationTask(pl.LightningModule):
    """Segmentation head on an encoder; the decision threshold is chosen on validation.

    The threshold maximising validation pixel F1 is kept in a buffer, so it travels with
    each checkpoint; test metrics use it and never influence it.
    """

    def __init__(self, encoder: dict, mode: str = "full", lr: float = 1e-3,
                 encoder_lr_factor: float = 0.1, weight_decay: float = 1e-4,
                 warmup_epochs: float = 1, dice_weight: float = 1.0,
                 iou_threshold: float = 0.3,
                 augment: dict | None = None,
                 decoder_channels: Sequence[int] | None = None,
                 encoder_frozen_epochs: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.spec = EncoderSpec(**encoder)
        self.net = build_segmentation(self.spec, mode, decoder_channels)
        if mode != "full":
            self.net.backbone.requires_grad_(False)
        self.augment = SegmentationAugment(**augment) if augment is not None else None
        self.register_buffer("threshold", torch.tensor(0.5))
        # counts per candidate threshold (no pixel lists; synced across DDP ranks)
        self.val_curve = threshold_sweep(THRESHOLDS)
        self.test_pixels = pixel_metrics()
        self.test_objects = ObjectCounts(iou_threshold)
        # the IoU of calling every pixel a slump: the level a model must beat to have learned
        self.test_slump_fraction = MeanMetric()
        self.test_mosaic: SceneMosaic | None = None  # whole-scene objects (on_test_epoch_start)
        self.pixel_area_m2 = 9.0  # object metrics per km2; the datamodule's, once attached

    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule
        if datamodule is not None:
            self.pixel_area_m2 = datamodule.pixel_area_m2

    def encoder_frozen(self) -> bool:
        """Modes linear and frozen always; mode full for its first ``encoder_frozen_epochs``,
        so that the decoder learns on the pretrained features before they move (LP-FT, Kumar
        et al. 2022: less distortion of the features out of distribution)."""
        return (self.hparams.mode != "full"
                or self.current_epoch < self.hparams.encoder_frozen_epochs)

    def on_train_epoch_start(self) -> None:
        if self.hparams.mode == "full":  # the encoder stays in the optimiser, without gradients
            thawed = not self.encoder_frozen()
            self.net.backbone.requires_grad_(thawed).train(thawed)

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        if self.encoder_frozen():
            self.net.backbone.eval()  # frozen means frozen normalisation statistics too

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        image, mask, ignore = batch["image"], batch["mask"], batch["ignore"]
        if self.augment is not None:
            with torch.no_grad():
                image, mask, ignore = self.augment(image, mask, ignore)
        loss = bce_dice_loss(self(image), mask, ignore, self.hparams.dice_weight)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, sync_dist=True,
                 batch_size=len(image))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits = self(batch["image"])
        loss = bce_dice_loss(logits, batch["mask"], batch["ignore"], self.hparams.dice_weight)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True)
        self.val_curve.update(torch.sigmoid(logits.squeeze(1)).float(),
                              with_ignore(batch["mask"], batch["ignore"]))

    def on_validation_epoch_end(self) -> None:
        if not self.val_curve.update_count:
            return
        best = max(sweep_summary(self.val_curve), key=lambda row: row["f1"])  # lowest of equals
        self.val_curve.reset()
        self.threshold.fill_(best["threshold"])
        # sync_dist: the sweep is pooled over DDP ranks already, so this averages equal values
        self.log_dict({"val/f1": best["f1"], "val/iou": best["iou"],
                       "val/threshold": best["threshold"]}, prog_bar=True, sync_dist=True)

    def on_test_epoch_start(self) -> None:
        """Objects are counted on whole scenes when the test windows have a layout (the
        datamodule's evaluation grid), else window by window."""
        datamodule = self.trainer.datamodule
        test = datamodule.datasets.get("test") if datamodule is not None else None
        layout = getattr(test, "layout", None)
        self.test_mosaic = (SceneMosaic(layout, self.test_objects, self.pixel_area_m2)
                            if layout is not None else None)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        predicted = (torch.sigmoid(self(batch["image"]).squeeze(1)) >= self.threshold).long()
        target = with_ignore(batch["mask"], batch["ignore"])
        self.test_pixels.update(predicted, target)
        self.test_slump_fraction.update((target[target != IGNORE] == 1).float())
        pred, ref = predicted.bool().cpu().numpy(), batch["mask"].bool().cpu().numpy()
        counted = ~batch["ignore"].cpu().numpy()
        if self.test_mosaic is not None and "position" in batch:
            self.test_mosaic.add(batch["position"].cpu().numpy(), pred, ref, counted)
            return
        for window in zip(pred, ref & counted, counted, strict=True):
            self.test_objects.add_masks(*window, self.pixel_area_m2)

    def on_test_epoch_end(self) -> None:
        if self.test_mosaic is not None:
            self.test_mosaic.finish()
            self.test_mosaic = None
        results = {f"test/{k}": float(v) for k, v in self.test_pixels.compute().items()}
        results |= {f"test/{k}": v for k, v in self.test_objects.compute().items()}
        results["test/slump_fraction"] = float(self.test_slump_fraction.compute())
        self.log_dict(results, sync_dist=True)  # pooled over DDP ranks already, as above
        for metric in (self.test_pixels, self.test_objects, self.test_slump_fraction):
            metric.reset()

    def parameter_groups(self) -> list[dict]:
        """What the optimiser trains, at which rate: the head at ``lr``, the encoder (mode
        full) at ``lr x encoder_lr_factor``."""
        hp = self.hparams
        groups = [{"params": self.net.decoder_parameters(), "lr": hp.lr}]
        if hp.mode == "full":
            groups.append({"params": self.net.backbone.parameters(),
                           "lr": hp.lr * hp.encoder_lr_factor})
        return groups

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = torch.optim.AdamW(self.parameter_groups(), weight_decay=hp.weight_decay)
        total = int(self.trainer.estimated_stepping_batches)
        per_epoch = total // max(self.trainer.max_epochs or 1, 1)
        scheduler = warmup_cosine(optimizer, total, int(hp.warmup_epochs * per_epoch))
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class SpectralRuleTask(SegmentationTask):
    """Fits the rule's two thresholds on the training pixels; validation and test as for
    every model (the same threshold choice, pixel and object metrics)."""

    def __init__(self, encoder: dict, bands: Sequence[str] | None = None,
                 stats: dict | None = None, **kwargs) -> None:
        """``bands`` and their training ``stats`` place the rule's indices; without them,
        those of the datamodule's train split when the trainer sets up."""
        super().__init__(encoder, **kwargs)
        self.automatic_optimization = False
        self.edges_index = torch.linspace(-1, 1, BINS + 1)
        self.edges_brightness = None
        self.counts = torch.zeros(2, BINS, BINS, dtype=torch.float64)  # negatives, slumps
        if bands is not None:
            self.configure(bands, BandStats.from_dict(stats))

    def encoder_frozen(self) -> bool:
        return False  # a fitted rule has no encoder (whatever head.encoder_frozen_epochs says)

    def configure(self, bands: Sequence[str], stats: BandStats) -> None:
        brightness = self.net.configure(bands, stats)
        self.edges_brightness = torch.linspace(*brightness, BINS + 1)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = self.trainer.datamodule
        if self.edges_brightness is None and datamodule is not None:
            self.configure(datamodule.bands, datamodule.datasets["train"].stats)

    def training_step(self, batch: dict, batch_idx: int) -> None:
        index, brightness = self.net.features(batch["image"])
        valid = ~batch["ignore"]
        i = _bin(index[valid], self.edges_index)
        b = _bin(brightness[valid], self.edges_brightness)
        label = batch["mask"][valid].long()
        flat = (label * BINS + i) * BINS + b
        self.counts += torch.bincount(flat.cpu(), minlength=2 * BINS * BINS).reshape(
            2, BINS, BINS).double()

    def on_train_epoch_start(self) -> None:
        self.counts.zero_()

    def on_validation_epoch_start(self) -> None:
        """Thresholds of maximum F1 on this epoch's training pixels (before validation):
        slump = index bin <= i and brightness bin >= b."""
        if not self.counts.any():
            return
        # cumulative over index bins from below and brightness bins from above
        caught = self.counts.cumsum(1).flip(2).cumsum(2).flip(2)
        tp, fp = caught[1], caught[0]
        fn = self.counts[1].sum() - tp
        f1 = 2 * tp / (2 * tp + fp + fn).clamp_min(1)
        best = int(torch.argmax(f1))
        i, b = divmod(best, BINS)
        self.net.index_max.fill_(float(self.edges_index[i + 1]))
        self.net.brightness_min.fill_(float(self.edges_brightness[b]))
        self.log("train/rule_f1", float(f1.flatten()[best]))

    def configure_optimizers(self):
        return None


def _bin(values: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Bin of each value among ``len(edges) - 1`` bins (outside values: the end bins)."""
    inner = edges[1:-1].to(values.device)
    return torch.bucketize(values.contiguous(), inner).clamp(0, len(edges) - 2)
