import numpy as np
import pytest
from cli import run_command
from matplotlib.image import imread

from fakes import ORIGIN, ramp_scene, write_geotiff
from rts_ssl.benchmarks import data_loading
from rts_ssl.data.labels import read_polygons
from rts_ssl.quicklook import render_quicklook

X, Y = ORIGIN


def test_quicklook_draws_polygons_in_red(tmp_path):
    import geopandas as gpd
    from shapely.geometry import box

    scene = write_geotiff(tmp_path / "s.tif", ramp_scene(size=200))
    gpd.GeoDataFrame(geometry=[box(X + 150, Y - 450, X + 450, Y - 150)],
                     crs="EPSG:32608").to_crs("EPSG:4326").to_file(tmp_path / "p.gpkg")
    out = render_quicklook(scene, tmp_path / "q.png", read_polygons(tmp_path / "p.gpkg"),
                           max_size=100)
    image = imread(out)[..., :3]
    red = (image[..., 0] > 0.8) & (image[..., 1] < 0.3) & (image[..., 2] < 0.3)
    assert red.sum() > 50  # the outline is drawn
    assert not list(tmp_path.glob(".q.tmp*"))


def test_bench_data_runs_end_to_end_on_a_small_scene(tmp_path):
    figures = data_loading.run(tmp_path, size=600, patch=64, batch=8, batches=2, rounds=1)
    assert figures["ours"] > 0 and figures["torchgeo"] > 0
    assert np.isclose(figures["ratio"], figures["ours"] / figures["torchgeo"])
    assert (tmp_path / "prepared_600" / "dataset.yaml").is_file()


def test_bench_predict_runs_on_small_scenes(tmp_path):
    from rts_ssl.benchmarks import prediction
    from rts_ssl.inference.sliding import Windowing, window_starts

    figures = prediction.run(tmp_path, sizes=(300, 600), encoder="resnet18", window=128,
                             overlap=32, batch=4, rounds=1)
    speed = figures["speed"]
    assert speed["windows"] == len(window_starts(300, Windowing(128, 32))) ** 2
    assert speed["ratio"] == pytest.approx(speed["end_to_end"] / speed["bare"])
    assert set(figures["memory_mb"]) == {300, 600}
    assert all(100 < mb < 4000 for mb in figures["memory_mb"].values())
    import geopandas as gpd

    # the memory leg's model predicts no slump: its time is not spent on noise polygons
    assert len(gpd.read_file(next((tmp_path / "memory_600").glob("*_slumps.gpkg")))) == 0
    assert figures["seconds"] > 0


def test_block_means_average_valid_pixels_only_however_the_rows_arrive(tmp_path):
    from fakes import write_geotiff
    from rts_ssl.data.scenes import Scene
    from rts_ssl.quicklook import RGB, BlockMeans

    array = np.arange(3 * 7 * 6, dtype=np.uint16).reshape(3, 7, 6) + 1
    array[:, 0, 0] = 0  # nodata
    array[:, 2:4, 4:6] = 0  # a whole block of nodata
    path = write_geotiff(tmp_path / "s.tif", array, descriptions=RGB)
    with Scene(path, RGB) as scene:
        means = BlockMeans(3, 7, 6, 2).read(scene).means()
        values, nodata = scene.read()
    assert means.shape == (3, 3, 3)  # the 7th row is cropped
    assert means[0, 0, 0] == pytest.approx(np.mean([2, 7, 8]))
    assert means[2, 1, 1] == pytest.approx(array[2, 2:4, 2:4].mean())
    assert np.isnan(means[:, 1, 2]).all()
    fed = BlockMeans(3, 7, 6, 2)  # rows in chunks that cut blocks, as predict reads them
    for top, bottom in ((0, 3), (3, 4), (4, 7)):
        fed.add(top, values[:, top:bottom], nodata[top:bottom])
    np.testing.assert_array_equal(fed.means(), means)


def test_predict_quicklook_from_its_own_reads_equals_a_separate_quicklook(tmp_path,
                                                                          monkeypatch):
    import matplotlib.image

    from rts_ssl.benchmarks.data_loading import write_bench_scene
    from rts_ssl.benchmarks.prediction import bench_model
    from rts_ssl.inference.ensemble import load_ensemble
    from rts_ssl.inference.predict import Prediction, predict_scene
    from rts_ssl.inference.sliding import Windowing
    from rts_ssl.quicklook import BlockMeans

    scene = write_bench_scene(tmp_path / "scene.tif", 300)
    ensemble = load_ensemble(str(bench_model(tmp_path, "mobilenetv3_small_050", -50.0)), "cpu")
    with monkeypatch.context() as patch:  # predict reads the scene once
        patch.setattr(BlockMeans, "read", lambda *_: pytest.fail("a second read of the scene"))
        predict_scene(scene, Prediction(ensemble, Windowing(128, 32, 4)), tmp_path / "out")
    alone = render_quicklook(scene, tmp_path / "alone.png", title="scene: 0 predicted slumps")
    np.testing.assert_array_equal(matplotlib.image.imread(alone), matplotlib.image.imread(
        tmp_path / "out" / "scene_quicklook.png"))


def test_bench_semi_times_each_method_against_supervised(tmp_path):
    import yaml

    from fakes import prepared_dataset
    from rts_ssl.benchmarks import semi

    root = prepared_dataset(tmp_path / "fake")
    bands = yaml.safe_load((root / "prepared" / "dataset.yaml").read_text())["bands"]
    data = {"name": "fake", "bands": bands, "prepared": str(root / "prepared")}
    from test_semi import SEMI

    method = {**SEMI, "name": "fixmatch", "method": "fixmatch", "unlabelled_ratio": 0.5,
              "rampup_epochs": 1}
    figures = semi.run(data, tmp_path / "work", {"fixmatch": method}, size=32, batch=4,
                       steps=2, warmup=1)
    assert figures["supervised"] > 0 and figures["fixmatch"] > 0
    assert figures["fixmatch_ratio"] == figures["fixmatch"] / figures["supervised"]


def test_cli_quicklook_of_a_given_scene_and_labels_file(tmp_path):
    from fakes import square_polygons

    scene = write_geotiff(tmp_path / "s.tif", ramp_scene(size=200))
    labels = square_polygons(tmp_path / "mine.gpkg", [(X + 150, Y - 450, 300)])
    cache = tmp_path / "cache"  # where the synthetic default would be generated
    done = run_command("quicklook", f"scene={scene}", f"labels={labels}",
         f"output={tmp_path / 'q.png'}", f"paths.cache_dir={cache}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "with 1 polygons" in done.stdout + done.stderr
    assert (tmp_path / "q.png").is_file() and not cache.exists()  # nothing generated
