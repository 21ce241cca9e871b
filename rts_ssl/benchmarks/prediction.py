"""Prediction speed vs the bare model, and peak memory at two scene sizes.

(a) ``predict_scene`` end to end (read + forward + blend + write + polygons) and (b) the bare
forward of the same windows already in memory, in one process; both count the window
pixels the model processes. Peak resident memory is measured per scene size in a fresh
``python -m rts_ssl predict`` process (``wait4`` rusage), to show it does not grow with size.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from rts_ssl.benchmarks.data_loading import BANDS, write_bench_scene
from rts_ssl.data.normalization import BandStats
from rts_ssl.data.scenes import Scene
from rts_ssl.inference.predict import load_ensemble, predict_scene
from rts_ssl.inference.sliding import Windowing, read_padded, window_starts
from rts_ssl.models.encoders import EncoderSpec
from rts_ssl.models.export import export_model
from rts_ssl.models.segmentation import build_segmentation

STATS = BandStats(tuple(BANDS), (1.0,) * 4, (6000.0,) * 4, (2000.0,) * 4, (800.0,) * 4)


def bench_model(workdir: Path, encoder: str) -> Path:
    """A random U-Net exported like a fine-tuned model (speed, not skill); its output bias
    makes slumps rare, as a trained model's are, so polygon work is realistic."""
    spec = EncoderSpec(encoder, encoder, len(BANDS), 64)
    torch.manual_seed(0)
    net = build_segmentation(spec, "full")
    torch.nn.init.constant_(net.unet.segmentation_head[0].bias, -4.0)
    return export_model(workdir / f"model_{encoder}", net, spec,
                        {"bands": BANDS, "normalization": STATS.to_dict(), "threshold": 0.5,
                         "input_size": 64, "mode": "full"})


def speed(model: Path, scene: Path, workdir: Path, windowing: Windowing) -> dict[str, float]:
    """Window-pixels/s of predict end to end and of the bare forward, same process."""
    torch.set_num_threads(torch.get_num_threads())
    ensemble = load_ensemble(str(model), "cpu")
    start = time.perf_counter()
    predict_scene(scene, ensemble, workdir / "speed", windowing)
    end_to_end = time.perf_counter() - start
    with Scene(scene, ensemble.bands) as src:
        rows, cols = window_starts(src.height, windowing), window_starts(src.width, windowing)
        windows = [read_padded(src, r, c, windowing.size) for r in rows for c in cols]
    start = time.perf_counter()
    with torch.no_grad():
        for k in range(0, len(windows), windowing.batch):
            part = windows[k:k + windowing.batch]
            images = torch.from_numpy(np.stack([w for w, _ in part]))
            nodata = torch.from_numpy(np.stack([m for _, m in part]))
            torch.sigmoid(ensemble.models[0](ensemble.stats.normalize(images, nodata)))
    bare = time.perf_counter() - start
    pixels = len(windows) * windowing.size**2
    return {"windows": len(windows), "end_to_end": pixels / end_to_end,
            "bare": pixels / bare, "ratio": bare / end_to_end}


def peak_memory_mb(model: Path, scene: Path, output: Path, windowing: Windowing) -> float:
    """Peak RSS (MB) of a separate ``python -m rts_ssl predict`` process on ``scene``."""
    process = subprocess.Popen(
        [sys.executable, "-m", "rts_ssl", "predict", f"checkpoint={model}", f"input={scene}",
         f"output={output}", f"window={windowing.size}", f"overlap={windowing.overlap}",
         f"batch_size={windowing.batch}", "overwrite=true"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise RuntimeError(f"predict on {scene} failed (status {status})")
    return usage.ru_maxrss / 1024


def run(workdir: Path, sizes=(5000, 20000), encoder: str = "mobilenetv3_small_050",
        window: int = 256, overlap: int = 64, batch: int = 8) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    model = bench_model(workdir, encoder)
    windowing = Windowing(window, overlap, batch)
    scenes = {size: write_bench_scene(workdir / f"bench_{size}.tif", size) for size in sizes}
    figures = {"speed": speed(model, scenes[min(sizes)], workdir, windowing)}
    figures["memory_mb"] = {size: peak_memory_mb(model, scene, workdir / f"memory_{size}",
                                                 windowing) for size, scene in scenes.items()}
    return figures
