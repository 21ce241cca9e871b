"""Per-band normalisation statistics computed from the data, and the one place they are applied.

Statistics are robust, so that snow, cloud and haze dates do not set the scale: the clipping
range is the 0.5-99.5 percentile range narrowed to the median +- 8 robust standard
deviations (1.4826 x the median absolute deviation), all estimated from a uniform sample of
valid pixels; mean and standard deviation are then accumulated in float64 over every valid
pixel inside that range. A series where a tenth of the dates are snow keeps the scale of
tundra and slumps instead of stretching it to 0-9,000 DN. Nodata pixels never count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm import tqdm

SAMPLE_PER_TILE = 2048
PERCENTILES = (0.5, 99.5)
ROBUST_SPAN = 8.0  # clipping range at most median +- this many robust standard deviations


@dataclass(frozen=True)
class BandStats:
    """Named per-band clipping range and moments; travels with datasets and checkpoints."""

    bands: tuple[str, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_dict(self) -> dict:
        return {key: list(value) for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> BandStats:
        return cls(**{key: tuple(value) for key, value in data.items()})

    def select(self, bands: Sequence[str]) -> BandStats:
        """The statistics of ``bands`` (by name, in that order)."""
        index = [self.bands.index(b) for b in bands]
        pick = lambda values: tuple(values[i] for i in index)  # noqa: E731
        return BandStats(tuple(bands), pick(self.low), pick(self.high), pick(self.mean),
                         pick(self.std))

    def normalize(self, image: torch.Tensor, nodata: torch.Tensor | None = None) -> torch.Tensor:
        """Clip, standardise, and zero nodata. ``image`` is ``(..., C, H, W)``."""
        return self.normalize_(image.to(torch.float32, copy=True), nodata)

    def normalize_(self, image: torch.Tensor, nodata: torch.Tensor | None = None) -> torch.Tensor:
        """In-place :meth:`normalize` of a float32 tensor (band by band: no temporaries)."""
        for band in range(len(self.bands)):
            values = image[..., band, :, :]
            values.clamp_(self.low[band], self.high[band])
            values.sub_(self.mean[band]).div_(self.std[band])
        if nodata is not None and bool(nodata.any()):
            image.masked_fill_(nodata.bool().unsqueeze(-3), 0.0)
        return image


def compute_band_stats(store, indices: Sequence[int] | None = None, seed: int = 0) -> BandStats:
    """Robust statistics over the tiles ``indices`` (default: every tile) of a
    :class:`~rts_ssl.data.tiles.TileStore`."""
    rng = np.random.default_rng(seed)
    n_bands = len(store.bands)
    indices = range(len(store)) if indices is None else [int(i) for i in indices]
    samples = []
    for i in tqdm(indices, desc="band statistics (1/2)", leave=False):
        image, masks = store.read(i)
        valid = image[:, masks[2] == 0]
        if valid.shape[1]:
            pick = rng.integers(0, valid.shape[1], min(SAMPLE_PER_TILE, valid.shape[1]))
            samples.append(valid[:, pick].astype(np.float64))
    if not samples:
        raise ValueError(f"{store.root}: no valid pixels to compute band statistics from")
    sample = np.concatenate(samples, axis=1)
    low, high = robust_range(sample)
    total = np.zeros(n_bands)
    total_sq = np.zeros(n_bands)
    count = np.zeros(n_bands)
    for i in tqdm(indices, desc="band statistics (2/2)", leave=False):
        image, masks = store.read(i)
        valid = image[:, masks[2] == 0].astype(np.float64)
        inside = (valid >= low[:, None]) & (valid <= high[:, None])
        total += np.where(inside, valid, 0).sum(axis=1)
        total_sq += np.where(inside, valid**2, 0).sum(axis=1)
        count += inside.sum(axis=1)
    count = np.maximum(count, 1)
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    std = np.where(std > 0, std, 1.0)
    as_tuple = lambda values: tuple(float(v) for v in values)  # noqa: E731
    return BandStats(tuple(store.bands), as_tuple(low), as_tuple(high), as_tuple(mean),
                     as_tuple(std))


def robust_range(sample: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-band clipping range of a ``(bands, n)`` sample (see the module docstring)."""
    low, median, high = np.percentile(sample, (PERCENTILES[0], 50, PERCENTILES[1]), axis=1)
    spread = 1.4826 * np.median(np.abs(sample - median[:, None]), axis=1)
    spread = np.where(spread > 0, spread, np.inf)  # constant bands keep the percentiles
    return (np.maximum(low, median - ROBUST_SPAN * spread),
            np.minimum(high, median + ROBUST_SPAN * spread))
