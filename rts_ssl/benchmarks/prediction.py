"""Prediction speed vs the bare model, and peak memory at two scene sizes.

(a) ``predict_scene`` end to end (read + forward + blend + write + polygons) and (b) the bare
forward of the same windows already in memory, in one process; both count the window
pixels the model processes. Peak resident memory is measured per scene size in a fresh
``python -m rts_ssl predict`` process (its own VmHWM), to show it does not grow with size;
its model predicts no slump, so the time goes to reading, inference and writing (an
untrained model's noise would become hundreds of thousands of polygons on a large scene).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from rts_ssl.benchmarks.data_loading import BANDS, write_bench_scene
from rts_ssl.data.normalization import BandStats
from rts_ssl.data.scenes import Scene
from rts_ssl.inference.ensemble import load_ensemble
from rts_ssl.inference.predict import Prediction, predict_scene
from rts_ssl.inference.sliding import Windowing, read_padded, window_starts
from rts_ssl.models.encoders import EncoderSpec
from rts_ssl.models.export import export_model
from rts_ssl.models.segmentation import build_segmentation

STATS = BandStats(tuple(BANDS), (1.0,) * 4, (6000.0,) * 4, (2000.0,) * 4, (800.0,) * 4)


def bench_model(workdir: Path, encoder: str, bias: float = -4.0) -> Path:
    """A random U-Net exported like a fine-tuned model (speed, not skill); its output bias
    of -4 makes slumps rare, as a trained model's are, so polygon work is realistic; -50
    makes none."""
    spec = EncoderSpec(encoder, encoder, len(BANDS), 64)
    torch.manual_seed(0)
    net = build_segmentation(spec, "full")
    torch.nn.init.constant_(net.unet.segmentation_head[0].bias, bias)
    return export_model(workdir / f"model_{encoder}_{bias:g}", net, spec,
                        {"bands": BANDS, "normalization": STATS.to_dict(), "threshold": 0.5,
                         "input_size": 64, "mode": "full"})


def speed(model: Path, scene: Path, workdir: Path, windowing: Windowing,
          rounds: int = 3) -> dict[str, float]:
    """Window-pixels/s of predict end to end and of the bare forward, same process.

    After one untimed warm-up batch, the two are timed alternately ``rounds`` times and the
    medians compared, so a burst of load on a shared machine does not decide the ratio.
    """
    ensemble = load_ensemble(str(model), "cpu")
    with Scene(scene, ensemble.bands) as src:
        rows, cols = window_starts(src.height, windowing), window_starts(src.width, windowing)
        starts = [(r, c) for r in rows for c in cols]
        batches = []
        for k in range(0, len(starts), windowing.batch):
            part = [read_padded(src, r, c, windowing.size, windowing.size)
                    for r, c in starts[k:k + windowing.batch]]
            batches.append((torch.from_numpy(np.stack([w for w, _ in part])),
                            torch.from_numpy(np.stack([m for _, m in part]))))

    @torch.no_grad()
    def bare(batches) -> None:
        for images, nodata in batches:
            torch.sigmoid(ensemble.models[0](ensemble.stats[0].normalize(images, nodata)))

    bare(batches[:1])
    times = {"end_to_end": [], "bare": []}
    for _ in range(rounds):
        start = time.perf_counter()
        predict_scene(scene, Prediction(ensemble, windowing), workdir / "speed")
        times["end_to_end"].append(time.perf_counter() - start)
        start = time.perf_counter()
        bare(batches)
        times["bare"].append(time.perf_counter() - start)
    pixels = len(starts) * windowing.size**2
    rates = {name: [pixels / t for t in values] for name, values in times.items()}
    end_to_end, bare_rate = (float(np.median(rates[name])) for name in ("end_to_end", "bare"))
    return {"windows": len(starts), "end_to_end": end_to_end, "bare": bare_rate,
            "ratio": end_to_end / bare_rate, "end_to_end_rounds": rates["end_to_end"],
            "bare_rounds": rates["bare"]}


def peak_memory_mb(model: Path, scene: Path, output: Path, windowing: Windowing) -> float:
    """Peak RSS (MB) of a separate ``python -m rts_ssl predict`` process on ``scene``."""
    done = subprocess.run(
        [sys.executable, "-m", "rts_ssl.benchmarks.peak_memory", "predict",
         f"model={model}", f"input={scene}", f"output={output}",
         f"window={windowing.size}", f"overlap={windowing.overlap}",
         f"batch_size={windowing.batch}", "overwrite=true"],
        capture_output=True, text=True)
    figures = [line for line in done.stdout.splitlines() if line.startswith("peak_rss_mb=")]
    if done.returncode != 0 or not figures:
        raise RuntimeError(f"predict on {scene} failed: {done.stderr[-2000:]}")
    return float(figures[-1].split("=")[1])


def run(workdir: Path, sizes=(4000, 12000), encoder: str = "mobilenetv3_small_050",
        window: int = 256, overlap: int = 64, batch: int = 8, rounds: int = 3) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    windowing = Windowing(window, overlap, batch)
    scenes = {size: write_bench_scene(workdir / f"bench_{size}.tif", size) for size in sizes}
    started = time.perf_counter()
    figures = {"speed": speed(bench_model(workdir, encoder), scenes[min(sizes)], workdir,
                              windowing, rounds)}
    quiet = bench_model(workdir, encoder, bias=-50.0)  # no slump: bounded polygon work
    figures["memory_mb"] = {size: peak_memory_mb(quiet, scene, workdir / f"memory_{size}",
                                                 windowing) for size, scene in scenes.items()}
    figures["seconds"] = time.perf_counter() - started
    return figures
