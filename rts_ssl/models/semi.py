"""Semi-supervised fine-tuning: labelled crops and unlabelled tiles in one training run.

A teacher reads each unlabelled crop as it is; the student learns to agree with it on a
strong photometric view of the same crop (:func:`rts_ssl.augment.strong_view_transform`,
any band count). Methods (``conf/semi/``):

- ``mean_teacher`` (Tarvainen & Valpola 2017): the teacher is an exponential moving average
  (EMA) of the student; soft targets (squared difference of slump probabilities) on every
  pixel with data.
- ``fixmatch`` (Sohn et al. 2020): the student itself, without gradients, is the teacher;
  hard pseudo-labels on the pixels it is confident about (``confidence``; for slumps
  ``slump_confidence``, at most ``slump_share`` of a crop's pixels).
- ``pixeldino`` (Heidler et al. 2024): EMA teacher; teacher and student map every pixel to
  ``prototypes`` pseudo-classes (a 1 x 1 convolution on the features the segmentation head
  reads); the student matches the teacher's centred, sharpened assignment (lightly's
  DINOLoss). Unlike the paper, teacher and student views share their geometry (the paper
  also distorts the teacher's output geometrically) and the networks are ours (U-Net on any
  encoder) rather than its UNet-16.

Only the student is exported: the model and ``predict`` are those of supervised runs.
Guard rails: ``semi/pseudo_positive`` (share of the teacher's confident pixels that say
slump; a warning when an epoch's share falls below ``collapse_below``: pseudo-labels that
collapse to all-background, the classic failure at ~0.1 % positives) and ``semi/agreement``
(teacher and student decisions at the current threshold).
"""

from __future__ import annotations

import copy
import logging
import math

import torch
import torch.nn.functional as F
from lightly.loss import DINOLoss
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule
from torch import nn

from rts_ssl.augment import strong_view_transform
from rts_ssl.models.finetune import SegmentationTask

log = logging.getLogger(__name__)
METHODS = ("none", "mean_teacher", "fixmatch", "pixeldino")
# what to change when the teacher's confident pixels collapse to background, per method: only
# FixMatch trains on the thresholded pseudo-labels; PixelDINO's targets are pseudo-classes, so
# its slump head learns from the labels alone
COLLAPSE_REMEDY = {
    "fixmatch": "lower semi.slump_confidence, set semi.class_balanced=true or lower "
                "semi.weight",
    "mean_teacher": "lower semi.weight",
    "pixeldino": "the slump head learns from the labels alone here: train longer or on more "
                 "labels",
}


class SemiSupervisedTask(SegmentationTask):
    """:class:`SegmentationTask` whose training batches are ``{"labelled", "unlabelled"}``;
    ``semi`` is a ``conf/semi/`` config (its ``method`` and settings)."""

    def __init__(self, encoder: dict, semi: dict, **kwargs) -> None:
        super().__init__(encoder, **kwargs)
        if semi["method"] not in METHODS[1:]:
            raise ValueError(f"unknown semi-supervised method {semi['method']!r} "
                             f"({', '.join(METHODS)})")
        self.semi = dict(semi)
        # a confident slump pseudo-label: at p >= this; background at p <= 1 - confidence
        self.slump_confidence = (semi["confidence"] if semi["slump_confidence"] is None
                                 else semi["slump_confidence"])
        self.strong = strong_view_transform(**semi.get("strong") or {})
        self.teacher = None if semi["method"] == "fixmatch" else _frozen_copy(self.net)
        self.embedding = self.teacher_embedding = self.dino = None
        if semi["method"] == "pixeldino":
            self.embedding = nn.Conv2d(self.net.feature_channels, semi["prototypes"], 1)
            self.teacher_embedding = _frozen_copy(self.embedding)
            temperature = semi["teacher_temperature"]
            self.dino = DINOLoss(semi["prototypes"], warmup_teacher_temp=temperature,
                                 teacher_temp=temperature, warmup_teacher_temp_epochs=0,
                                 student_temp=1.0, center_momentum=semi["center_momentum"])
        self._pseudo = torch.zeros(2, dtype=torch.float64)  # this epoch: slump, confident

    def parameter_groups(self) -> list[dict]:
        groups = super().parameter_groups()
        if self.embedding is not None:
            groups.append({"params": list(self.embedding.parameters()), "lr": self.hparams.lr})
        return groups

    def on_train_start(self) -> None:
        """The teacher starts as the student (pretrained weights are loaded by now)."""
        for student, teacher in self._ema_pairs():
            teacher.load_state_dict(student.state_dict())

    def rampup(self) -> float:
        """Progress through the first ``rampup_epochs`` of training, 0 to 1."""
        epochs = max(self.trainer.max_epochs or 1, 1)
        ramp = self.semi["rampup_epochs"] * self._total_steps() / epochs
        return min(1.0, self.global_step / ramp) if ramp > 0 else 1.0

    def consistency_weight(self) -> float:
        """``weight`` after a sigmoid ramp-up (Laine & Aila 2017)."""
        return self.semi["weight"] * math.exp(-5 * (1 - self.rampup()) ** 2)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        supervised = super().training_step(batch["labelled"], batch_idx)
        image, valid = batch["unlabelled"]["image"], ~batch["unlabelled"]["nodata"]
        with torch.no_grad():
            strong = self.strong(image)
            target_logits, target_features = self._teacher(image)
            labels = self.pseudo_labels(target_logits, valid)
        logits, features = self.net.forward_features(strong)
        if self.semi["method"] == "pixeldino":
            loss = self._pixel_dino(target_features, features, valid)
        elif self.semi["method"] == "fixmatch":
            loss = pseudo_label_loss(logits, *labels, self.semi["class_balanced"])
        else:
            loss = ((torch.sigmoid(logits) - torch.sigmoid(target_logits)) ** 2).squeeze(1)
            loss = loss[valid].mean() if valid.any() else loss.sum() * 0
        weight = self.consistency_weight()
        self._watch(target_logits, logits, valid, labels)
        self.log_dict({"semi/loss": loss, "semi/weight": weight}, on_step=True, on_epoch=True,
                      batch_size=len(image), sync_dist=True)
        return supervised + weight * loss

    def on_train_batch_end(self, outputs, batch: dict, batch_idx: int) -> None:
        """EMA update of the teacher; its momentum rises from ``ema_decay`` to 1."""
        momentum = cosine_schedule(min(self.global_step, self._total_steps()),
                                   self._total_steps(), self.semi["ema_decay"], 1.0)
        for student, teacher in self._ema_pairs():
            ema_update(student, teacher, momentum)

    def on_train_epoch_end(self) -> None:
        slump, confident = self._pseudo.tolist()
        self._pseudo.zero_()
        share = slump / confident if confident else 0.0
        # a new teacher is unsure of slumps: judged once the ramp-up is over
        collapsed = self.rampup() >= 1 and share < self.semi["collapse_below"]
        self.log("semi/collapsed", float(collapsed), sync_dist=True)  # share of ranks
        if collapsed:
            log.warning("epoch %d: the teacher's confident pixel pseudo-labels are %.2g slump "
                        "(below %.2g): collapsed to background; %s", self.current_epoch, share,
                        self.semi["collapse_below"], COLLAPSE_REMEDY[self.semi["method"]])

    def _teacher(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.teacher is None:  # fixmatch: the student on the unaugmented crop
            return self.net.forward_features(image)
        self.teacher.eval()
        return self.teacher.forward_features(image)

    def _pixel_dino(self, target: torch.Tensor, features: torch.Tensor,
                    valid: torch.Tensor) -> torch.Tensor:
        """DINO cross-entropy per pixel with data (at the feature map's resolution)."""
        keep = F.interpolate(valid[:, None].float(), size=features.shape[-2:],
                             mode="nearest")[:, 0].bool()
        if not keep.any():
            return features.sum() * 0
        with torch.no_grad():
            teacher = self.teacher_embedding(target).permute(0, 2, 3, 1)[keep]
        student = self.embedding(features).permute(0, 2, 3, 1)[keep]
        # DINOLoss pairs views of different indices: the one pair is given twice
        return self.dino([teacher, teacher], [student, student])

    def pseudo_labels(self, target_logits: torch.Tensor,
                      valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher's confident (slump, background) pixels at this config's bars."""
        return pseudo_labels(target_logits, valid, self.semi["confidence"],
                             self.slump_confidence, self.semi["slump_share"])

    def _watch(self, target_logits: torch.Tensor, logits: torch.Tensor, valid: torch.Tensor,
               labels: tuple[torch.Tensor, torch.Tensor]) -> None:
        """Log the pseudo-labels' slump share and teacher/student agreement."""
        with torch.no_grad():
            target = torch.sigmoid(target_logits.squeeze(1))[valid]
            student = torch.sigmoid(logits.squeeze(1))[valid]
            slump = labels[0].sum()
            confident = slump + labels[1].sum()
            self._pseudo += torch.stack([slump, confident]).double().cpu()
            agree = ((target >= self.threshold) == (student >= self.threshold)).float()
            self.log_dict({"semi/pseudo_positive": slump / confident.clamp_min(1),
                           "semi/agreement": agree.mean() if len(agree) else 1.0},
                          on_step=False, on_epoch=True, batch_size=len(target_logits),
                          sync_dist=True)

    def _ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        if self.teacher is None:
            return []
        pairs = [(self.net, self.teacher)]
        if self.embedding is not None:
            pairs.append((self.embedding, self.teacher_embedding))
        return pairs

    def _total_steps(self) -> int:
        return max(int(self.trainer.estimated_stepping_batches), 1)


@torch.no_grad()
def ema_update(student: nn.Module, teacher: nn.Module, momentum: float) -> None:
    """teacher = momentum x teacher + (1 - momentum) x student (lightly), and the student's
    buffers (batch-norm statistics), which an average of parameters does not carry."""
    update_momentum(student, teacher, momentum)
    for mine, theirs in zip(teacher.buffers(), student.buffers(), strict=True):
        mine.copy_(theirs)


def _frozen_copy(module: nn.Module) -> nn.Module:
    teacher = copy.deepcopy(module)
    deactivate_requires_grad(teacher)
    return teacher


def pseudo_labels(target_logits: torch.Tensor, valid: torch.Tensor, confidence: float,
                  slump_confidence: float, slump_share: float | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard pseudo-labels on pixels with data: slump at p >= ``slump_confidence``, background
    at p <= 1 - ``confidence``, the rest none. ``slump_share`` keeps only each crop's most
    probable share of pixels as slump (ties included): a teacher unsure of rare slumps calls
    too many of them at a low bar, and the expected share of slump pixels is known."""
    target = torch.sigmoid(target_logits.squeeze(1))
    slump = valid & (target >= slump_confidence)
    if slump_share is not None:
        ranked = target.masked_fill(~valid, -1.0).flatten(1).sort(dim=1, descending=True).values
        keep = (valid.flatten(1).sum(1) * slump_share).ceil().long().clamp_min(1)
        bar = ranked.gather(1, keep[:, None] - 1)
        slump &= target >= bar[:, :, None]
    background = valid & ~slump & (target <= 1 - confidence)
    return slump, background


def pseudo_label_loss(logits: torch.Tensor, slump: torch.Tensor, background: torch.Tensor,
                      class_balanced: bool = False) -> torch.Tensor:
    """BCE of the student against hard pseudo-labels (:func:`pseudo_labels`) on their pixels
    only. ``class_balanced`` averages each class's pixels apart and the two means equally, so
    that a few slump pseudo-labels are not drowned by ~1,000 times as many background ones."""
    confident = slump | background
    if not confident.any():
        return logits.sum() * 0
    losses = F.binary_cross_entropy_with_logits(logits.squeeze(1), slump.float(),
                                                reduction="none")
    if not class_balanced:
        return losses[confident].mean()
    return torch.stack([losses[pixels].mean() for pixels in (slump, background)
                        if pixels.any()]).mean()
