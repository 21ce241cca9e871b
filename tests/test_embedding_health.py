import torch

from rts_ssl.models.embedding_health import (
    COLLAPSE_THRESHOLD,
    effective_rank,
    knn_balanced_accuracy,
    normalized_std,
)


def test_spread_and_rank_detect_collapse():
    torch.manual_seed(0)
    healthy = torch.randn(256, 64)
    collapsed = torch.ones(256, 64) + 1e-4 * torch.randn(256, 64)
    assert 0.8 < normalized_std(healthy) < 1.2
    assert normalized_std(collapsed) < COLLAPSE_THRESHOLD
    assert effective_rank(healthy) > 40
    low_rank = torch.randn(256, 2) @ torch.randn(2, 64)
    assert effective_rank(low_rank) < 2.5


def test_knn_balanced_accuracy_separable_vs_random():
    torch.manual_seed(0)
    labels = torch.tensor([0] * 90 + [1] * 10)
    separable = 0.3 * torch.randn(100, 8)
    separable[:, 0] += torch.where(labels == 1, 3.0, -3.0)  # opposite directions
    assert knn_balanced_accuracy(separable, labels) == 1.0
    noise = torch.randn(100, 8)
    assert knn_balanced_accuracy(noise, labels) < 0.7  # majority vote cannot cheat
