"""Scenes per second of ``predict`` on the local engine and on Ray with 1 and 2 workers.

Same scenes, same model, one torch thread per scene everywhere (so one Ray worker and the
local engine do the same work per scene). Each Ray run starts its local Ray, sends one
untimed scene per worker (worker start-up and imports), then times every scene; start-up
is reported apart, as a cluster pays it once per job, not per scene.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from rts_ssl.benchmarks.data_loading import write_bench_scene
from rts_ssl.benchmarks.prediction import bench_model
from rts_ssl.inference.engines import ray_session
from rts_ssl.inference.ensemble import load_ensemble
from rts_ssl.inference.predict import Prediction, predict_scenes
from rts_ssl.inference.sliding import Windowing


def run(workdir: Path, scenes: int = 8, size: int = 768, encoder: str = "resnet18",
        window: int = 256, overlap: int = 64, batch: int = 4) -> dict[str, float]:
    paths = [write_bench_scene(workdir / "scenes" / f"scene_{i}.tif", size, seed=i)
             for i in range(scenes)]
    warmup = [write_bench_scene(workdir / "warmup" / f"warmup_{i}.tif", size // 2, seed=100 + i)
              for i in range(2)]
    model = bench_model(workdir, encoder)
    prediction = Prediction(load_ensemble(str(model), "cpu"), Windowing(window, overlap, batch))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        figures = {"local": _rate(paths, prediction, workdir / "out_local", "local", {})}
        for workers in (1, 2):
            options = {"local_cpus": workers, "num_cpus": 1, "torch_threads": 1}
            started = time.perf_counter()
            with ray_session(options):
                predict_scenes(warmup[:workers], prediction, workdir / f"warm_{workers}",
                               overwrite=True, engine="ray", ray_options=options)
                figures[f"ray{workers}_startup_s"] = time.perf_counter() - started
                figures[f"ray{workers}"] = _rate(paths, prediction,
                                                 workdir / f"out_ray{workers}", "ray", options)
    finally:
        torch.set_num_threads(threads)
    figures["two_vs_one"] = figures["ray2"] / figures["ray1"]
    figures["one_vs_local"] = figures["ray1"] / figures["local"]
    return figures


def _rate(paths: list[Path], prediction: Prediction, output: Path, engine: str,
          options: dict) -> float:
    started = time.perf_counter()
    summary = predict_scenes(paths, prediction, output, overwrite=True, engine=engine,
                             ray_options=options)
    if summary.failed or summary.done != len(paths):
        raise RuntimeError(f"benchmark scenes failed: {summary.failed}")
    return len(paths) / (time.perf_counter() - started)
