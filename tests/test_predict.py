
import os
import sys
import threading
import time

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
from cli import run_command

from fakes import texture_scene, write_geotiff
from rts_ssl.data.normalization import BandStats
from rts_ssl.data.scenes import Scene
from rts_ssl.inference.sliding import Windowing, predict_probabilities, read_ahead
from rts_ssl.models.encoders import EncoderSpec
from rts_ssl.models.export import export_model
from rts_ssl.models.segmentation import build_segmentation

BANDS = ["blue", "green", "red", "nir"]
STATS = BandStats(tuple(BANDS), (0,) * 4, (6000,) * 4, (2000,) * 4, (500,) * 4)
SPEC = EncoderSpec("resnet18", "resnet18", 4, 64)


def export(tmp_path, name="model", constant=None, seed=0):
    torch.manual_seed(seed)
    net = build_segmentation(SPEC, "full")
    if constant is not None:  # a model that says "slump" everywhere
        head = net.unet.segmentation_head[0]
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.constant_(head.bias, constant)
    meta = {"bands": BANDS, "normalization": STATS.to_dict(), "threshold": 0.5,
            "input_size": 64, "mode": "full"}
    return export_model(tmp_path / name, net, SPEC, meta)


def scene_with_border(path, size=300, order=(0, 1, 2, 3)):
    array = texture_scene(4, size, seed=3)
    array[:, :40, :] = 0  # nodata border on top
    array[:, :, -25:] = 0  # and on the right
    return write_geotiff(path, array[list(order)], descriptions=tuple(BANDS[i] for i in order))


def predict(model, scene, output, *extra):
    return run_command("predict", f"model={model}",
                           f"input={scene}", f"output={output}", "window=128", "overlap=32",
                           *extra)


def test_sliding_windows_equal_one_big_forward(tmp_path):
    net = torch.nn.Conv2d(4, 1, 1)  # pointwise: windows must reproduce it exactly
    path = write_geotiff(tmp_path / "s.tif", texture_scene(4, 150))
    with Scene(path, BANDS) as scene:
        parts = list(predict_probabilities(scene, [net], [STATS], Windowing(64, 16, 3)))
        image, _ = scene.read()
    blended = np.concatenate([rows for _, rows in parts])
    with torch.no_grad():
        full = torch.sigmoid(net(STATS.normalize(torch.from_numpy(image)[None])))[0, 0]
    np.testing.assert_allclose(blended, full.numpy(), atol=1e-5)
    assert [top for top, _ in parts] == sorted(top for top, _ in parts)


def test_each_ensemble_member_reads_the_scene_with_its_own_statistics(tmp_path):
    net = torch.nn.Conv2d(4, 1, 1)
    other = BandStats(tuple(BANDS), (0,) * 4, (3000,) * 4, (800,) * 4, (200,) * 4)  # a fold's
    path = write_geotiff(tmp_path / "s.tif", texture_scene(4, 100))
    with Scene(path, BANDS) as scene:
        parts = list(predict_probabilities(scene, [net, net], [STATS, other],
                                           Windowing(64, 16, 3)))
        image, _ = scene.read()
    blended = np.concatenate([rows for _, rows in parts])
    with torch.no_grad():
        each = [torch.sigmoid(net(stats.normalize(torch.from_numpy(image)[None])))[0, 0]
                for stats in (STATS, other)]
    np.testing.assert_allclose(blended, ((each[0] + each[1]) / 2).numpy(), atol=1e-5)
    assert not np.allclose(each[0].numpy(), each[1].numpy(), atol=1e-2)  # the stats matter



def test_read_ahead_reads_one_key_ahead_at_low_priority_with_the_callers_gdal_settings():
    log, seen = [], []

    def read(key):
        options = rasterio.env.getenv()
        log.append(("read", key, threading.get_native_id(), options.get("GDAL_CACHEMAX")))
        if sys.platform == "linux":
            seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return key * 10

    def keys_read():
        return [entry[1] for entry in log if entry[0] == "read"]

    with rasterio.Env(GDAL_CACHEMAX=12345678):
        got = []
        for value in read_ahead(read, [1, 2, 3]):
            key = value // 10
            deadline = time.monotonic() + 10
            while key < 3 and key + 1 not in keys_read() and time.monotonic() < deadline:
                time.sleep(0.01)  # the next key is read while this value is in use
            time.sleep(0.02)
            assert keys_read() == list(range(1, min(key + 1, 3) + 1))  # never two ahead
            got.append(value)
            log.append(("used", value))
    assert got == [10, 20, 30]
    assert {entry[2] for entry in log if entry[0] == "read"} != {threading.get_native_id()}
    assert {entry[3] for entry in log if entry[0] == "read"} == {12345678}
    if sys.platform == "linux":
        assert seen == [19, 19, 19]


def test_read_ahead_stopped_early_leaves_no_read_running_and_passes_errors_on():
    finished = []

    def slow(key):
        time.sleep(0.2)
        finished.append(key)
        return key

    strips = read_ahead(slow, [0, 1, 2])
    assert next(strips) == 0
    strips.close()  # key 1 is being read: close waits for it, key 2 is never read
    assert finished == [0, 1]

    def failing(key):
        if key == 1:
            raise OSError("unreadable block")
        return key

    reads = read_ahead(failing, [0, 1, 2])
    assert next(reads) == 0
    with pytest.raises(OSError, match="unreadable block"):
        next(reads)


def test_constant_model_output_grid_nodata_and_polygons(tmp_path):
    scene = scene_with_border(tmp_path / "s.tif")
    model = export(tmp_path, constant=10.0)
    done = predict(model, scene, tmp_path / "out")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "predict scenes" in done.stderr and "Created" not in done.stderr  # no pyogrio chatter
    with rasterio.open(scene) as src, rasterio.open(tmp_path / "out" / "s_probability.tif") as p:
        assert (p.crs, p.transform, p.shape) == (src.crs, src.transform, src.shape)
        assert p.dtypes[0] == "uint8" and p.nodata == 255
        assert p.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        values = p.read(1)
        nodata = src.read(1) == 0
    assert (values[nodata] == 255).all() and (values[~nodata] == 254).all()
    slumps = gpd.read_file(tmp_path / "out" / "s_slumps.gpkg")
    assert len(slumps) == 1 and slumps.is_valid.all() and slumps.crs.to_epsg() == 32608
    valid_area = (~nodata).sum() * 9.0
    assert slumps.loc[0, "area_m2"] == pytest.approx(valid_area)
    assert slumps.loc[0, "mean_prob"] == pytest.approx(1.0)
    assert slumps.loc[0, "scene"] == "s.tif"
    assert (tmp_path / "out" / "s_quicklook.png").stat().st_size > 1000


def test_band_order_permutation_gives_identical_output(tmp_path):
    model = export(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = scene_with_border(tmp_path / "a" / "s.tif")
    b = scene_with_border(tmp_path / "b" / "s.tif", order=(3, 1, 0, 2))
    for scene, out in ((a, "oa"), (b, "ob")):
        assert predict(model, scene, tmp_path / out).returncode == 0
    with rasterio.open(tmp_path / "oa" / "s_probability.tif") as pa, \
            rasterio.open(tmp_path / "ob" / "s_probability.tif") as pb:
        np.testing.assert_array_equal(pa.read(), pb.read())


def test_bad_scenes_are_reported_and_skipped_and_runs_resume(tmp_path):
    model = export(tmp_path)
    (tmp_path / "in").mkdir()
    scene_with_border(tmp_path / "in" / "good.tif")
    write_geotiff(tmp_path / "in" / "three.tif", texture_scene(3, 64),
                  descriptions=("blue", "green", "red"))
    (tmp_path / "in" / "broken.tif").write_bytes(b"II*\x00 truncated")
    done = predict(model, tmp_path / "in", tmp_path / "out")
    assert done.returncode == 3, done.stderr[-2000:]  # some scenes failed, the rest done
    log = done.stderr + done.stdout
    assert "three.tif: band nir not found" in log
    assert "broken.tif: not a readable GeoTIFF" in log
    assert "1 scenes mapped (1 now, 0 already done), 2 failed" in log
    assert done.stderr.strip().splitlines()[-1].startswith("error: 2 of 3 scenes failed")
    slumps = len(gpd.read_file(tmp_path / "out" / "good_slumps.gpkg"))
    stamp = (tmp_path / "out" / "good_probability.tif").stat().st_mtime_ns
    scene_with_border(tmp_path / "in" / "second.tif")
    killed = tmp_path / "out" / ".second_probability.tmp-999999999.tif"  # a killed run's
    killed.write_bytes(b"half")
    again = predict(model, tmp_path / "in", tmp_path / "out")
    assert not killed.exists()
    log = again.stderr + again.stdout
    assert "2 scenes mapped (1 now, 1 already done), 2 failed" in log
    assert f": {2 * slumps} slumps" in log  # the summary counts the resumed scene too
    assert (tmp_path / "out" / "good_probability.tif").stat().st_mtime_ns == stamp
    assert (tmp_path / "out" / "second_slumps.gpkg").is_file()


def test_predict_exit_codes_and_one_line_errors(tmp_path):
    model = export(tmp_path)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "broken.tif").write_bytes(b"II*\x00 truncated")
    failed = predict(model, tmp_path / "in", tmp_path / "out")
    assert failed.returncode == 2  # nothing done
    assert failed.stderr.strip().splitlines()[-1].startswith("error: ")
    (tmp_path / "file").write_text("x")
    scene = scene_with_border(tmp_path / "good.tif")
    onto_file = predict(model, scene, tmp_path / "file")
    assert onto_file.returncode == 2 and "Traceback" not in onto_file.stderr
    assert f"{tmp_path / 'file'}: exists and is not a directory" in onto_file.stderr
    (model / "model.yaml").write_text("format: [unclosed\n")
    bad_yaml = predict(model, scene, tmp_path / "out2")
    assert bad_yaml.returncode == 2 and "Traceback" not in bad_yaml.stderr
    assert "model.yaml: not valid YAML" in bad_yaml.stderr


def test_truncated_tiles_name_gdal_problem_and_hint_names_predict_option(tmp_path):
    model = export(tmp_path)
    (tmp_path / "in").mkdir()
    full = scene_with_border(tmp_path / "full.tif", size=600)
    data = full.read_bytes()
    (tmp_path / "in" / "cut.tif").write_bytes(data[: len(data) // 2])
    write_geotiff(tmp_path / "in" / "plain.tif", texture_scene(4, 64), descriptions=None)
    done = predict(model, tmp_path / "in", tmp_path / "out")
    log = done.stderr + done.stdout
    assert "See previous exception" not in log and "cut.tif" in log
    assert "IReadBlock failed" in log or "TIFFRead" in log
    assert "plain.tif: bands have no descriptions: name them with band_names=[...]" in log


@pytest.mark.parametrize(("edit", "key"), [(lambda text: text.replace("- nir", "- B11"), "bands"),
                                            (lambda text: text + "resolution_m: 5.0\n",
                                             "resolution_m")])
def test_ensemble_models_must_agree_on_how_they_read_a_scene(tmp_path, edit, key):
    first = export(tmp_path, "a")
    second = export(tmp_path, "b", seed=1)
    (second / "model.yaml").write_text(edit((second / "model.yaml").read_text()))
    scene = scene_with_border(tmp_path / "s.tif")
    done = predict(f"[{first},{second}]", scene, tmp_path / "out")
    assert done.returncode == 2 and f"ensemble models disagree on {key}" in done.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_dem_radius_matters_only_to_models_that_derive_relative_elevation(tmp_path):
    from rts_ssl.inference.ensemble import scene_reading

    terrain = ["red", "relative_elevation"]
    assert scene_reading({"bands": ["red"], "dem_radius_m": 50})["dem_radius_m"] is None
    assert scene_reading({"bands": terrain, "dem_radius_m": 50})["dem_radius_m"] == 50.0
    assert scene_reading({"bands": terrain})["dem_radius_m"] == 100.0  # older models
    from_raster = [{"path": "../dem/{stem}.tif", "bands": ["slope", "relative_elevation"]}]
    assert scene_reading({"bands": terrain, "auxiliary": from_raster})["dem_radius_m"] is None

    first, second = export(tmp_path, "a"), export(tmp_path, "b", seed=1)
    (second / "model.yaml").write_text((second / "model.yaml").read_text() + "dem_radius_m: 50\n")
    done = predict(f"[{first},{second}]", scene_with_border(tmp_path / "s.tif"), tmp_path / "o")
    assert done.returncode == 0, done.stderr[-2000:]  # optical models: the radius is unused


def export_vit(tmp_path, name, input_size):
    spec = EncoderSpec("vit_tiny", "vit_tiny_patch16_224", 4, input_size, 8)
    meta = {"bands": BANDS, "normalization": STATS.to_dict(), "threshold": 0.5,
            "input_size": input_size, "mode": "full"}
    return export_model(tmp_path / name, build_segmentation(spec, "full"), spec, meta)


def test_an_ensemble_with_a_vit_predicts_in_the_vits_window_size(tmp_path):
    scene = scene_with_border(tmp_path / "s.tif", size=100)
    members = f"[{export(tmp_path, 'cnn')},{export_vit(tmp_path, 'vit', 32)}]"
    # the default overlap is a quarter of the window: 8 px here (a fixed 64 px crashed)
    done = run_command("predict", f"model={members}", f"input={scene}",
                       f"output={tmp_path / 'out'}")
    assert done.returncode == 0, done.stderr[-2000:]
    with rasterio.open(tmp_path / "out" / "s_probability.tif") as src:
        assert src.shape == (100, 100)
    done = run_command("predict", f"model={members}", f"input={scene}",
                       f"output={tmp_path / 'out1'}", "overlap=32")
    assert done.returncode == 2
    assert "overlap=32: must be smaller than the window (32 px)" in done.stderr

    other = export_vit(tmp_path, "vit64", 64)
    done = predict(f"[{members[1:-1]},{other}]", scene, tmp_path / "out2")
    assert done.returncode == 2
    assert "vit64: ensemble ViT models take different input sizes: 64 vs 32 px" in done.stderr


def test_evaluate_against_a_raster_mask_and_polygons(tmp_path):
    import json

    from fakes import ORIGIN, square_polygons

    (tmp_path / "scenes").mkdir()
    (tmp_path / "masks").mkdir()
    scene_with_border(tmp_path / "scenes" / "s.tif")
    truth = np.zeros((1, 300, 300), np.uint8)
    truth[0, 100:160, 50:110] = 1  # one 60 x 60 px slump (180 m on a side)
    write_geotiff(tmp_path / "masks" / "s_mask.tif", truth, nodata=None, descriptions=None)
    model = export(tmp_path, constant=10.0)  # predicts slump everywhere valid
    for mask in (tmp_path / "masks",
                 square_polygons(tmp_path / "truth.gpkg",
                                 [(ORIGIN[0] + 150, ORIGIN[1] - 480, 180)])):
        done = run_command("evaluate", f"model={model}",
             f"input={tmp_path / 'scenes'}", f"masks={mask}", "window=128", "overlap=32",
             f"output={tmp_path / 'metrics.json'}")
        assert done.returncode == 0, done.stderr[-2000:]
        result = json.loads((tmp_path / "metrics.json").read_text())
        pooled = result["pooled"]
        valid = (300 - 40) * (300 - 25)
        assert pooled["recall"] == pytest.approx(1.0)
        assert pooled["precision"] == pytest.approx(3600 / valid, rel=1e-3)
        # one huge predicted object overlaps the slump with IoU << 0.3: a miss and a FP
        assert pooled["object_recall"] == 0.0 and pooled["object_precision"] == 0.0
        assert result["scenes"]["s.tif"]["iou"] == pytest.approx(pooled["iou"])
        assert "POOLED" in done.stdout


def test_evaluate_drops_predicted_slumps_smaller_than_min_area_as_predict_does(tmp_path):
    import json

    scene = scene_with_border(tmp_path / "s.tif")
    truth = np.zeros((1, 300, 300), np.uint8)
    truth[0, 100:160, 50:110] = 1
    mask = write_geotiff(tmp_path / "s_mask.tif", truth, nodata=None, descriptions=None)
    model = export(tmp_path, constant=10.0)  # one object: the valid area, 260 x 275 px of 9 m2
    metrics = tmp_path / "metrics.json"
    pooled = {}
    for min_area in (640_000, 650_000):  # the object covers 643,500 m2
        done = run_command("evaluate", f"model={model}", f"input={scene}", f"masks={mask}",
                           "window=128", f"min_area_m2={min_area}", f"output={metrics}")
        assert done.returncode == 0, done.stderr[-2000:]
        pooled[min_area] = json.loads(metrics.read_text())["pooled"]
    assert pooled[640_000]["object_fp_per_100km2"] > 0  # kept: a false positive
    assert pooled[650_000]["object_fp_per_100km2"] == 0  # dropped, as predict would
    assert pooled[650_000]["iou"] == pooled[640_000]["iou"] > 0  # pixels are not polygons


def test_evaluate_reads_the_named_layer_of_a_multi_layer_polygon_file(tmp_path):
    import json

    from fakes import ORIGIN, square_polygons

    scene = scene_with_border(tmp_path / "s.tif")
    truth = tmp_path / "truth.gpkg"  # slumps beside look-alikes, as the synthetic labels
    square_polygons(truth, [(ORIGIN[0] + 150, ORIGIN[1] - 480, 180)], layer="slumps")
    square_polygons(truth, [(ORIGIN[0] + 30, ORIGIN[1] - 120, 60)], layer="lookalikes")
    model = export(tmp_path, constant=10.0)  # predicts slump everywhere valid
    args = ("evaluate", f"model={model}", f"input={scene}", f"masks={truth}", "window=128",
            "overlap=32", f"output={tmp_path / 'metrics.json'}")
    done = run_command(*args)
    assert done.returncode == 2
    assert "truth.gpkg: has 2 layers (slumps, lookalikes); set masks_layer" in done.stderr
    done = run_command(*args, "masks_layer=slumps")
    assert done.returncode == 0, done.stderr[-2000:]
    pooled = json.loads((tmp_path / "metrics.json").read_text())["pooled"]
    valid = (300 - 40) * (300 - 25)
    assert pooled["precision"] == pytest.approx(3600 / valid, rel=1e-3)  # the slump only


def test_a_model_directory_named_like_a_curve_cell_needs_no_quotes(tmp_path):
    model = export(tmp_path / "entry=random-resnet18,seed=0")  # a cell's model/
    done = predict(model, scene_with_border(tmp_path / "s.tif", size=100), tmp_path / "out")
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "out" / "s_probability.tif").exists()


def test_evaluate_sweeps_thresholds_and_takes_a_threshold_for_the_region(tmp_path):
    import json

    scene = scene_with_border(tmp_path / "s.tif")
    truth = np.zeros((1, 300, 300), np.uint8)
    truth[0, 100:160, 50:110] = 1
    mask = write_geotiff(tmp_path / "s_mask.tif", truth, nodata=None, descriptions=None)
    model = export(tmp_path, constant=0.4)  # probability sigmoid(0.4) = 0.599 everywhere
    args = (f"model={model}", f"input={scene}", f"masks={mask}", "window=128", "overlap=32")
    metrics = tmp_path / "metrics.json"
    done = run_command("evaluate", *args, f"output={metrics}", "thresholds=[0.3,0.5,0.65]")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(metrics.read_text())
    every, at_model, above = result["threshold_sweep"]
    assert [row["threshold"] for row in result["threshold_sweep"]] == [0.3, 0.5, 0.65]
    valid = (300 - 40) * (300 - 25)
    assert every["recall"] == pytest.approx(1.0)
    assert every["iou"] == pytest.approx(3600 / valid, rel=1e-4)
    assert at_model["iou"] == pytest.approx(result["pooled"]["iou"], rel=1e-4)  # cut 0.5
    assert above == {"threshold": 0.65, "iou": 0.0, "f1": 0.0, "precision": 0.0, "recall": 0.0}
    assert "* threshold 0.300" in done.stdout  # ties: the first best is marked

    done = run_command("evaluate", *args, f"output={metrics}", "threshold=0.65")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(metrics.read_text())
    assert result["threshold"] == 0.65 and result["pooled"]["recall"] == 0.0
    assert "threshold_sweep" not in result


def test_exclusion_polygons_and_raster_remove_predictions(tmp_path):
    import shapely

    from fakes import ORIGIN

    scene = scene_with_border(tmp_path / "s.tif")
    model = export(tmp_path, constant=10.0)
    # exclude the left half: as polygons in another CRS, and as a mask raster
    left = shapely.box(ORIGIN[0], ORIGIN[1] - 900, ORIGIN[0] + 450, ORIGIN[1])
    gpd.GeoDataFrame(geometry=[left], crs="EPSG:32608").to_crs("EPSG:4326").to_file(
        tmp_path / "water4326.gpkg")
    mask = np.zeros((1, 300, 300), np.uint8)
    mask[0, :, :150] = 1
    raster = write_geotiff(tmp_path / "water.tif", mask, nodata=None, descriptions=None)
    for n, exclude in enumerate((tmp_path / "water4326.gpkg", raster)):
        done = predict(model, scene, tmp_path / f"out{n}", f"exclude={exclude}")
        assert done.returncode == 0, done.stderr[-2000:]
        with rasterio.open(tmp_path / f"out{n}" / "s_probability.tif") as src:
            values = src.read(1)
        assert (values[40:, :149] == 0).all() and (values[40:, 151:275] == 254).all()


def test_exclusion_layer_of_a_multi_layer_file(tmp_path):
    from fakes import ORIGIN, square_polygons

    scene = scene_with_border(tmp_path / "s.tif")
    model = export(tmp_path, constant=10.0)
    water = tmp_path / "masks.gpkg"  # the left 450 m square as water, a road elsewhere
    square_polygons(water, [(ORIGIN[0], ORIGIN[1] - 450, 450)], layer="water")
    square_polygons(water, [(ORIGIN[0] + 600, ORIGIN[1] - 300, 150)], layer="roads")
    done = predict(model, scene, tmp_path / "out", f"exclude={water}")
    assert done.returncode == 2
    assert "masks.gpkg: has 2 layers (water, roads); set exclude_layer" in done.stderr
    done = predict(model, scene, tmp_path / "out", f"exclude={water}", "exclude_layer=water")
    assert done.returncode == 0, done.stderr[-2000:]
    with rasterio.open(tmp_path / "out" / "s_probability.tif") as src:
        values = src.read(1)
    assert (values[40:149, :149] == 0).all() and (values[40:149, 151:275] == 254).all()
    assert (values[200:, :149] == 254).all() and (values[110:140, 210:240] == 254).all()


def test_probability_rasters_store_uint8_with_a_nodata_value():
    from rts_ssl.inference.probability import (
        NODATA,
        stored_at_least,
        stored_probabilities,
        to_uint8,
    )

    stored = to_uint8(np.array([0.0, 0.31, 0.5, 1.0, np.nan], np.float32))
    assert stored.tolist() == [0, 79, 127, 254, NODATA]
    assert stored_at_least(stored, 0.31).tolist() == [False, True, True, True, False]
    np.testing.assert_allclose(stored_probabilities(stored), [0, 79 / 254, 0.5, 1.0])
