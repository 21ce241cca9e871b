"""Patches/s of the training data path vs torchgeo on one large compressed GeoTIFF.

Both paths run in this process with the same batch size and patch size, on a warm page
cache, so the ratio is meaningful on a noisy machine.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin
from torch.utils.data import DataLoader, RandomSampler
from torchgeo.datasets import RasterDataset, stack_samples
from torchgeo.samplers import RandomGeoSampler

from rts_ssl.data.dataset import TileDataset, collate_tiles
from rts_ssl.data.prepare import prepare_dataset
from rts_ssl.data.sensors import SENSORS
from rts_ssl.files import write_atomic

log = logging.getLogger(__name__)
BANDS = list(SENSORS["planetscope"].bands)


def write_bench_scene(path: Path, size: int, seed: int = 0) -> Path:
    """A ``size`` x ``size`` 4-band uint16 deflate-compressed tiled GeoTIFF (cached)."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    profile = dict(driver="GTiff", width=size, height=size, count=4, dtype="uint16",
                   crs="EPSG:32608", transform=from_origin(500000, 7600000, 3, 3), nodata=0,
                   tiled=True, blockxsize=256, blockysize=256, compress="deflate")
    cols = np.arange(size)

    def write(tmp: Path) -> None:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.descriptions = tuple(BANDS)
            for row in range(0, size, 512):
                rows = np.arange(row, min(row + 512, size))[:, None]
                base = 1500 + 600 * np.sin(rows / 97.0) * np.cos(cols / 131.0)
                for band in range(4):
                    noise = rng.normal(0, 80, (len(rows), size))
                    values = np.clip(base * (1 + 0.3 * band) + noise, 1, 65535)
                    dst.write(values.astype(np.uint16), band + 1,
                              window=((row, row + len(rows)), (0, size)))

    write_atomic(path, write)
    return path


def patches_per_second(loader: Iterable, batches: int, warmup: int = 2) -> float:
    """Throughput of ``batches`` batches after ``warmup`` untimed ones."""
    iterator = iter(loader)
    for _ in range(warmup):
        next(iterator)
    start, count = time.perf_counter(), 0
    for _ in range(batches):
        batch = next(iterator)
        count += len(batch["image"])
    return count / (time.perf_counter() - start)


class _BenchRaster(RasterDataset):
    filename_glob = "*.tif"


def run(workdir: Path, size: int = 8000, patch: int = 128, batch: int = 64,
        batches: int = 20, rounds: int = 5) -> dict:
    """Write the scene, prepare it, and measure both data paths. Returns the figures.

    The two paths are measured alternately ``rounds`` times and the medians compared, so
    a burst of load on the machine hits both.
    """
    scene = write_bench_scene(workdir / f"bench_{size}.tif", size)
    start = time.perf_counter()
    data = {"name": "bench", "sensor": "planetscope", "bands": BANDS, "scenes": str(scene),
            "tiles": {"size": 256, "overlap": 32, "max_nodata_fraction": 0.5,
                      "location_block_m": 1000}}
    prepare_dataset(data, workdir / f"prepared_{size}", workers=2, overwrite=True)
    prepare_s = time.perf_counter() - start
    n = (batches + 2) * batch
    ours = TileDataset(workdir / f"prepared_{size}", crop_size=patch)
    geo = _BenchRaster(paths=[str(scene)])
    ours_rates, geo_rates = [], []
    for _ in range(rounds):
        ours_loader = DataLoader(ours, batch_size=batch, collate_fn=collate_tiles,
                                 sampler=RandomSampler(ours, replacement=True, num_samples=n))
        ours_rates.append(patches_per_second(ours_loader, batches))
        geo_loader = DataLoader(geo, batch_size=batch, collate_fn=stack_samples,
                                sampler=RandomGeoSampler(geo, size=patch, length=n))
        geo_rates.append(patches_per_second(geo_loader, batches))
    ours_rate, geo_rate = float(np.median(ours_rates)), float(np.median(geo_rates))
    return {"prepare_s": prepare_s, "ours": ours_rate, "torchgeo": geo_rate,
            "ratio": ours_rate / geo_rate, "ours_rounds": ours_rates, "torchgeo_rounds": geo_rates}
