"""Sliding-window prediction of one scene with bounded memory.

Windows are read from the GeoTIFF one window-row strip at a time (reflection-padded at the
scene edges; the next strip is read while the model works on this one), run through the
model(s) in batches, blended with a cosine weight so overlaps leave no seams, and
accumulated in a buffer one window-row high; rows no later window can touch are written
out at once. Memory is bounded by the window size x scene width and the batch, not the
scene.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import rasterio
import torch
from rasterio.env import getenv, hasenv
from rasterio.windows import Window

from rts_ssl.data.normalization import BandStats
from rts_ssl.data.scenes import Scene

T = TypeVar("T")
R = TypeVar("R")


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


def read_padded(scene: Scene, row: int, col: int, height: int,
                width: int) -> tuple[np.ndarray, np.ndarray]:
    """A window that may extend past the scene, reflection-padded (nodata outside)."""
    r0, c0 = max(row, 0), max(col, 0)
    r1, c1 = min(row + height, scene.height), min(col + width, scene.width)
    values, nodata = scene.read(Window(c0, r0, c1 - c0, r1 - r0))
    pad = ((r0 - row, row + height - r1), (c0 - col, col + width - c1))
    if any(p for pair in pad for p in pair):
        mode = "reflect" if min(values.shape[1:]) > max(max(pad)) else "symmetric"
        values = np.pad(values, ((0, 0), *pad), mode=mode)
        nodata = np.pad(nodata, pad, constant_values=True)
    return values, nodata


def predict_probabilities(
    scene: Scene,
    models: Sequence[torch.nn.Module],
    stats: Sequence[BandStats],
    windowing: Windowing,
    device: str = "cpu",
    on_rows: Callable[[int, np.ndarray, np.ndarray], None] | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(first_row, rows)`` of blended slump probability (float32, NaN = nodata).

    Each window row is read as one strip and its windows are sliced from it; ``on_rows``
    sees each scene row once as read, ``(first_row, values, nodata)`` (e.g. a quicklook's
    block means, so the scene is read once). The next strip is read while the model works
    on this one (:func:`read_ahead`): close this generator (``contextlib.closing``) before
    the scene when stopping early.
    """
    size, stride, overlap = windowing.size, windowing.stride, windowing.overlap
    height, width = scene.height, scene.width
    weights = blend_weights(size, overlap)
    rows, cols = window_starts(height, windowing), window_starts(width, windowing)
    offset = cols[0]
    span = cols[-1] + size - offset
    prob = np.zeros((size, span), np.float32)
    weight = np.zeros((size, span), np.float32)
    valid = np.zeros((size, span), bool)
    seen = 0

    def read(row: int) -> tuple[np.ndarray, np.ndarray]:
        nonlocal seen
        strip, nodata = read_padded(scene, row, offset, size, span)
        if on_rows is not None and min(row + size, height) > seen:
            new, cut = slice(seen - row, min(size, height - row)), slice(-offset, width - offset)
            on_rows(seen, strip[:, new, cut], nodata[new, cut])
            seen = min(row + size, height)
        return strip, nodata

    written = 0
    with contextlib.closing(read_ahead(read, rows)) as strips:  # no read left running
        for index, (row, (strip, nodata)) in enumerate(zip(rows, strips, strict=True)):
            for starts, images, masks in _batches(strip, nodata, cols, offset, windowing):
                out = _forward(models, stats, images, masks, device) * weights
                for k, col in enumerate(starts):
                    c = col - offset
                    prob[:, c:c + size] += out[k]
                    weight[:, c:c + size] += weights
                    valid[:, c:c + size] |= ~nodata[:, c:c + size]
            final = stride if index < len(rows) - 1 else size
            top, bottom = max(row, written), min(row + final, height)
            if bottom > top:
                block = slice(top - row, bottom - row)
                cut = slice(-offset, -offset + width)
                result = prob[block, cut] / np.maximum(weight[block, cut], 1e-12)
                result[~valid[block, cut]] = np.nan
                yield top, result
                written = bottom
            for buffer in (prob, weight, valid):  # the overlap rows carry over to the next row
                buffer[:overlap] = buffer[stride:]
                buffer[overlap:] = 0


def read_ahead(read: Callable[[T], R], keys: Sequence[T]) -> Iterator[R]:
    """``read(key)`` of each key in order, the next one read in a background thread while
    the caller works on this one.

    The thread runs at the lowest CPU priority (Linux: per thread): when the model keeps
    every core busy, reading takes only the cycles the model leaves idle, instead of
    slowing the model's own threads (with an equal-priority reader on 2 cores, prediction
    got slower, not faster). It reads with the caller's GDAL settings (rasterio keeps them
    per thread).
    """
    options = getenv() if hasenv() else {}

    def task(key: T) -> R:
        with rasterio.Env(**options):
            return read(key)

    with ThreadPoolExecutor(1, thread_name_prefix="read-ahead",
                            initializer=_lowest_priority) as reader:
        ahead = reader.submit(task, keys[0]) if keys else None
        for k in range(len(keys)):
            current = ahead.result()
            if k + 1 < len(keys):
                ahead = reader.submit(task, keys[k + 1])
            yield current


def _lowest_priority() -> None:
    """Nice this thread to 19 where the OS can (Linux); elsewhere it reads at normal
    priority."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


def _batches(strip: np.ndarray, nodata: np.ndarray, cols: list[int], offset: int,
             windowing: Windowing) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
    """The windows of one strip, batched; windows without any valid pixel are skipped."""
    size = windowing.size
    starts = [col for col in cols if not nodata[:, col - offset:col - offset + size].all()]
    for k in range(0, len(starts), windowing.batch):
        part = starts[k:k + windowing.batch]
        images = np.stack([strip[:, :, c - offset:c - offset + size] for c in part])
        masks = np.stack([nodata[:, c - offset:c - offset + size] for c in part])
        yield part, torch.from_numpy(images), torch.from_numpy(masks)


@torch.no_grad()
def _forward(models, stats: Sequence[BandStats], images, nodata, device) -> np.ndarray:
    """Mean sigmoid probability of the ensemble, ``(B, H, W)``, each model's input
    normalised with its own statistics."""
    images, nodata = images.to(device), nodata.to(device)
    total = sum(torch.sigmoid(model(member.normalize(images, nodata))).squeeze(1)
                for model, member in zip(models, stats, strict=True))
    return (total / len(models)).cpu().numpy()
