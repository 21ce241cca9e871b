"""Sliding-window prediction of one scene with bounded memory.

Windows are read from the GeoTIFF one batch at a time (reflection-padded at the scene edges),
run through the model(s), blended with a cosine weight so overlaps leave no seams, and
accumulated in a buffer one window-row high; rows no later window can touch are written out
at once. Memory is bounded by the window size x scene width and the batch, not the scene.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from rasterio.windows import Window

from rts_ssl.data.normalization import BandStats
from rts_ssl.data.scenes import Scene

NODATA = 255  # probability rasters: uint8, p x 254, 255 = no data


@dataclass(frozen=True)
class Windowing:
    size: int
    overlap: int
    batch: int = 8

    @property
    def stride(self) -> int:
        return self.size - self.overlap


def blend_weights(size: int, overlap: int) -> np.ndarray:
    """2D weights rising as a cosine over the overlap margins, flat 1 inside."""
    ramp = np.ones(size, np.float32)
    margin = overlap // 2
    if margin:
        edge = 0.5 - 0.5 * np.cos(np.pi * (np.arange(margin) + 0.5) / margin)
        ramp[:margin], ramp[-margin:] = edge, edge[::-1]
    return np.outer(ramp, ramp) + 1e-6


def window_starts(length: int, windowing: Windowing) -> list[int]:
    """Window offsets starting half an overlap before the scene, covering it fully."""
    start = -(windowing.overlap // 2)
    starts = list(range(start, max(length - windowing.size + windowing.overlap // 2, start) + 1,
                        windowing.stride))
    while starts[-1] + windowing.size - windowing.overlap // 2 < length:
        starts.append(starts[-1] + windowing.stride)
    return starts


def read_padded(scene: Scene, row: int, col: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A window that may extend past the scene, reflection-padded (nodata outside)."""
    r0, c0 = max(row, 0), max(col, 0)
    r1, c1 = min(row + size, scene.height), min(col + size, scene.width)
    values, nodata = scene.read(Window(c0, r0, c1 - c0, r1 - r0))
    pad = ((r0 - row, row + size - r1), (c0 - col, col + size - c1))
    if any(p for pair in pad for p in pair):
        mode = "reflect" if min(values.shape[1:]) > max(max(pad)) else "symmetric"
        values = np.pad(values, ((0, 0), *pad), mode=mode)
        nodata = np.pad(nodata, pad, constant_values=True)
    return values, nodata


def predict_probabilities(
    scene: Scene,
    models: Sequence[torch.nn.Module],
    stats: BandStats,
    windowing: Windowing,
    device: str = "cpu",
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(first_row, rows)`` of blended slump probability (float32, NaN = nodata)."""
    size, stride, height, width = windowing.size, windowing.stride, scene.height, scene.width
    weights = torch.from_numpy(blend_weights(size, windowing.overlap))
    rows = window_starts(height, windowing)
    cols = window_starts(width, windowing)
    offset = cols[0]
    span = cols[-1] + size - offset
    prob = np.zeros((size, span), np.float32)
    weight = np.zeros((size, span), np.float32)
    valid = np.zeros((size, span), bool)
    written = 0
    for index, row in enumerate(rows):
        for batch in _batches(scene, row, cols, size, windowing.batch):
            starts, images, nodata = batch
            out = _forward(models, stats, images, nodata, device)
            for k, col in enumerate(starts):
                c = col - offset
                prob[:, c:c + size] += out[k] * weights.numpy()
                weight[:, c:c + size] += weights.numpy()
                valid[:, c:c + size] |= ~nodata[k].numpy()
        final = stride if index < len(rows) - 1 else size
        top, bottom = max(row, written), min(row + final, height)
        if bottom > top:
            block = slice(top - row, bottom - row)
            cut = slice(-offset, -offset + width)
            result = prob[block, cut] / np.maximum(weight[block, cut], 1e-12)
            result[~valid[block, cut]] = np.nan
            yield top, result
            written = bottom
        prob = np.roll(prob, -stride, axis=0)
        weight = np.roll(weight, -stride, axis=0)
        valid = np.roll(valid, -stride, axis=0)
        prob[-stride:], weight[-stride:], valid[-stride:] = 0, 0, False


def _batches(scene, row, cols, size, batch_size):
    """Windows of one window-row, batched; windows without any valid pixel are skipped."""
    starts, images, masks = [], [], []
    for col in cols:
        values, nodata = read_padded(scene, row, col, size)
        if nodata.all():
            continue
        starts.append(col)
        images.append(values)
        masks.append(nodata)
        if len(starts) == batch_size:
            yield starts, torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(masks))
            starts, images, masks = [], [], []
    if starts:
        yield starts, torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(masks))


@torch.no_grad()
def _forward(models, stats: BandStats, images, nodata, device) -> np.ndarray:
    """Mean sigmoid probability of the ensemble, ``(B, H, W)``."""
    x = stats.normalize(images.to(device), nodata.to(device))
    total = sum(torch.sigmoid(model(x)).squeeze(1) for model in models)
    return (total / len(models)).cpu().numpy()

