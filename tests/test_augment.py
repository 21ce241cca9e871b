import torch

from rts_ssl.augment import SegmentationAugment


def _marked_batch(batch: int = 16, bands: int = 6, size: int = 8):
    """Images whose pixel (1, 2) is bright in every band, with a mask marking it."""
    image = torch.zeros(batch, bands, size, size)
    image[:, :, 1, 2] = torch.arange(1, bands + 1, dtype=torch.float32)[None, :]
    mask = torch.zeros(batch, size, size)
    mask[:, 1, 2] = 1
    return image, mask


def test_flips_and_turns_move_image_and_labels_alike():
    torch.manual_seed(0)
    image, mask = _marked_batch()
    out, out_mask, out_ignore = SegmentationAugment(0.0, 0.0)(image, mask, mask.bool())
    bright = out.sum(dim=1) > 0
    assert torch.equal(bright, out_mask.bool()) and torch.equal(out_ignore, out_mask.bool())
    assert len({tuple(m.nonzero()[0].tolist()) for m in out_mask}) > 2  # several placements
    assert torch.equal(out.amax(dim=(2, 3)), image.amax(dim=(2, 3)))  # no jitter at 0 / 0


def test_band_dropout_zeroes_one_band_of_a_sample():
    torch.manual_seed(0)
    image, mask = _marked_batch()
    out, _ = SegmentationAugment(0.0, 0.0, band_dropout=1.0)(image, mask)
    zeroed = (out.amax(dim=(2, 3)) == 0).sum(dim=1)
    assert zeroed.tolist() == [1] * len(image)
    kept, _ = SegmentationAugment(0.0, 0.0)(image, mask)
    assert (kept.amax(dim=(2, 3)) > 0).all()


def test_band_jitter_changes_bands_independently():
    torch.manual_seed(0)
    image = torch.ones(64, 4, 8, 8)
    out, _ = SegmentationAugment(0.1, 0.1)(image, torch.zeros(64, 8, 8))
    per_band = out[:, :, 0, 0]
    assert (per_band - 1).abs().max() <= 0.2 + 1e-6  # gain 0.1 x 1 + offset 0.1
    assert per_band.std(dim=1).mean() > 0.01  # bands of one sample differ
