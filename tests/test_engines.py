"""engine=ray runs the scenes of predict / evaluate / monitor as Ray tasks: same outputs as
the local engine, failures reported per scene, killed workers retried."""

import json
import os
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import geopandas as gpd
import pytest
import rasterio
from cli import run_command
from test_monitor import red_band_model, write_series
from test_predict import export, scene_with_border

from fakes import texture_scene, write_geotiff
from rts_ssl.data.dates import scene_date
from rts_ssl.inference.engines import ray_session
from rts_ssl.monitoring.monitor import monitor

RAY = ["engine=ray", "ray.local_cpus=2"]


def three_scenes(folder, size=300):
    folder.mkdir()
    for i in range(3):
        scene_with_border(folder / f"scene_{i}.tif", size=size)
    return folder


def predict(model, scenes, output, *extra):
    return run_command("predict", f"model={model}", f"input={scenes}", f"output={output}",
                       "window=128", "overlap=32", *extra)


@contextmanager
def killing_first_task():
    """While the block runs, a thread SIGKILLs the first scene task it sees; yields the
    list of killed pids."""
    killed, stop = [], threading.Event()
    watcher = threading.Thread(target=_kill_first_task, args=(killed, stop), daemon=True)
    watcher.start()
    try:
        yield killed
    finally:
        stop.set()
        watcher.join()


def _kill_first_task(killed: list, stop: threading.Event) -> None:
    """SIGKILL the first process seen running a scene task (Ray names it after the task)."""
    while not stop.is_set() and not killed:
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                running = cmdline.read_bytes().startswith(b"ray::_ray_task")
                if running:
                    os.kill(int(cmdline.parent.name), signal.SIGKILL)
            except OSError:  # the process ended meanwhile
                continue
            if running:
                killed.append(int(cmdline.parent.name))
                return
        time.sleep(0.02)


@pytest.fixture(scope="class")
def one_ray():
    """One local Ray for the class's tests; the commands join it as they would join a
    cluster, so its workers import torch once, not once per test."""
    with ray_session({"local_cpus": 2}):
        yield


@pytest.mark.usefixtures("one_ray")
class TestOnRay:
    def test_ray_outputs_equal_local_outputs(self, tmp_path):
        model, scenes = export(tmp_path), three_scenes(tmp_path / "scenes")
        local = predict(model, scenes, tmp_path / "local")
        ray = predict(model, scenes, tmp_path / "ray", *RAY)
        assert local.returncode == ray.returncode == 0, ray.stderr
        for i in range(3):
            for kind in ("probability.tif", "quicklook.png"):
                name = f"scene_{i}_{kind}"
                ray_bytes = (tmp_path / "ray" / name).read_bytes()
                assert ray_bytes == (tmp_path / "local" / name).read_bytes()
            slumps = [gpd.read_file(tmp_path / run / f"scene_{i}_slumps.gpkg")
                      for run in ("local", "ray")]
            assert slumps[0].equals(slumps[1])  # a GeoPackage stores its write time: not bytes
        assert ray.stdout.splitlines() == local.stdout.replace("/local/", "/ray/").splitlines()

    def test_ray_evaluate_pools_scenes_like_local(self, tmp_path):
        model, scenes = export(tmp_path, constant=5.0), three_scenes(tmp_path / "scenes", size=200)
        masks = tmp_path / "masks"
        masks.mkdir()
        for i in range(3):
            mask = (texture_scene(1, 200, seed=i)[:1] > 2200).astype("uint8")
            write_geotiff(masks / f"scene_{i}_mask.tif", mask, descriptions=None)
        results = {}
        for engine in ("local", "ray"):
            done = run_command("evaluate", f"model={model}", f"input={scenes}", f"masks={masks}",
                               f"output={tmp_path / engine}.json", "window=128", f"engine={engine}",
                               "ray.local_cpus=2")
            assert done.returncode == 0, done.stderr
            results[engine] = json.loads((tmp_path / f"{engine}.json").read_text())
        assert results["ray"] == results["local"]
        assert 0 < results["ray"]["pooled"]["iou"] < 1

    def test_ray_reports_a_bad_scene_and_maps_the_others(self, tmp_path):
        model, scenes = export(tmp_path), three_scenes(tmp_path / "scenes", size=200)
        write_geotiff(scenes / "scene_9.tif", texture_scene(3, 200), descriptions=("a", "b", "c"))
        done = predict(model, scenes, tmp_path / "out", *RAY)
        assert done.returncode == 3
        assert "1 of 4 scenes failed" in done.stderr and "scene_9.tif" in done.stderr
        assert len(list((tmp_path / "out").glob("*_slumps.gpkg"))) == 3

    def test_a_worker_killed_mid_scene_is_retried_and_nothing_is_half_written(self, tmp_path):
        model, scenes = export(tmp_path), three_scenes(tmp_path / "scenes", size=600)
        with killing_first_task() as killed:
            done = predict(model, scenes, tmp_path / "out", *RAY)
        assert killed, "no scene task was seen running"
        assert done.returncode == 0, done.stderr  # the killed scene ran again in a new worker
        for i in range(3):
            with rasterio.open(tmp_path / "out" / f"scene_{i}_probability.tif") as src:
                assert src.read(1).shape == (600, 600)
            assert "area_m2" in gpd.read_file(tmp_path / "out" / f"scene_{i}_slumps.gpkg")
        again = predict(model, scenes, tmp_path / "out", *RAY)
        assert again.returncode == 0 and "(0 now, 3 already done)" in again.stderr
        assert not list((tmp_path / "out").glob(".*.tmp-*"))  # the killed worker's temporaries

    def test_a_scene_whose_worker_dies_beyond_its_retries_is_reported_and_skipped(self, tmp_path):
        model, scenes = export(tmp_path), three_scenes(tmp_path / "scenes", size=600)
        with killing_first_task() as killed:
            done = predict(model, scenes, tmp_path / "out", *RAY, "ray.max_retries=0")
        assert killed
        assert done.returncode == 3
        assert "1 of 3 scenes failed" in done.stderr
        assert "Ray worker died (WorkerCrashedError, attempts: 1)" in done.stderr


    def test_ray_monitor_gives_the_local_time_series(self, tmp_path):
        scenes = [(scene_date(p), p) for p in write_series(tmp_path / "in")]
        tables = {}
        for engine in ("local", "ray"):
            monitor(scenes, red_band_model(), tmp_path / engine, engine=engine)
            tables[engine] = (tmp_path / engine / "timeseries.csv").read_text()
        assert tables["ray"] == tables["local"]
        assert tables["ray"].count("\n") == 5  # header + four dates


def test_unknown_engine_is_one_line(tmp_path):
    done = predict(export(tmp_path), three_scenes(tmp_path / "scenes", size=100),
                   tmp_path / "out", "engine=spark")
    assert done.returncode == 2
    assert "engine: unknown engine 'spark': one of local, ray" in done.stderr


def test_joining_no_ray_cluster_is_one_line(tmp_path):
    done = predict(export(tmp_path), three_scenes(tmp_path / "scenes", size=100),
                   tmp_path / "out", "engine=ray", "ray.address=auto")
    assert done.returncode == 2
    assert done.stderr.startswith("error: ray.address=auto: no Ray cluster there (Could not find")
    assert len(done.stderr.strip().splitlines()) == 1


def test_bench_scale_prints_the_two_ratios_last(tmp_path):
    done = run_command("bench", "target=scale", f"workdir={tmp_path}", "scale.scenes=2",
                       "scale.size=160", "scale.window=128", "scale.overlap=32")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[-2].startswith("ray 2 workers / 1 worker: ")
    assert lines[-1].startswith("ray 1 worker / local: ")
    ratios = [float(line.rsplit(": ", 1)[1]) for line in lines[-2:]]
    assert all(0 < ratio < 10 for ratio in ratios)
    assert len(list((tmp_path / "scale" / "out_ray2").glob("*_probability.tif"))) == 2
