"""Collapse guard: how spread out the embeddings are, and whether they know about slumps."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from lightly.utils.debug import std_of_l2_normalized

COLLAPSE_THRESHOLD = 0.1  # std of l2-normalised embeddings x sqrt(dim); ~1 when healthy


def normalized_std(embeddings: torch.Tensor) -> float:
    """lightly's std of l2-normalised embeddings, times sqrt(dim) so that the scale does not
    depend on the width: about 1 for embeddings spread over the sphere, 0 when they all
    collapse to one point."""
    return float(std_of_l2_normalized(embeddings.float()) * math.sqrt(embeddings.shape[1]))


def effective_rank(embeddings: torch.Tensor) -> float:
    """exp(entropy) of the normalised singular values (Roy & Vetterli 2007)."""
    z = embeddings.float() - embeddings.float().mean(dim=0)
    s = torch.linalg.svdvals(z)
    p = s / s.sum().clamp_min(1e-12)
    return float(torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum()))


def knn_balanced_accuracy(embeddings: torch.Tensor, labels: torch.Tensor, k: int = 5) -> float:
    """Leave-one-out cosine kNN balanced accuracy of binary tile labels (e.g. has slump)."""
    z = F.normalize(embeddings.float(), dim=1)
    sim = z @ z.T
    sim.fill_diagonal_(-math.inf)
    k = min(k, len(z) - 1)
    votes = labels[sim.topk(k, dim=1).indices].float().mean(dim=1)
    predicted = votes > 0.5
    recalls = [(predicted[labels == c] == bool(c)).float().mean() for c in (0, 1)
               if (labels == c).any()]
    return float(torch.stack(recalls).mean())
