"""data.resolution_m: scenes, their masks and auxiliary rasters resampled onto one pixel size."""

import numpy as np
import pytest
import rasterio
import yaml
from affine import Affine
from cli import run_command
from test_auxiliary import AUX, export_six_band_model, scene_with_dem

from fakes import ORIGIN, write_geotiff
from rts_ssl.data.grid_masks import GridMask
from rts_ssl.data.prepare import prepare_dataset
from rts_ssl.data.scenes import Scene
from rts_ssl.data.tiles import TileStore
from rts_ssl.errors import InputError

NAMES = ["B2", "B3", "B4", "B8"]


def slump_mask(path, size=64, rows=(10, 20), cols=(30, 36)):
    """A 0/1 mask on the 3 m grid of :func:`scene_with_dem` with one 10 x 6 px slump."""
    mask = np.zeros((1, size, size), np.uint8)
    mask[0, slice(*rows), slice(*cols)] = 1
    return write_geotiff(path, mask, nodata=None, descriptions=None)


def test_a_scene_at_half_its_pixel_size_has_four_times_the_pixels(tmp_path):
    path = scene_with_dem(tmp_path)
    with Scene(path, ["B2", "slope"], band_names=NAMES, auxiliary=AUX,
               resolution_m=1.5) as scene:
        assert (scene.width, scene.height, scene.transform.a) == (128, 128, 1.5)
        assert tuple(scene.bounds) == (ORIGIN[0], ORIGIN[1] - 192, ORIGIN[0] + 192, ORIGIN[1])
        values, nodata = scene.read()
        mask = GridMask(scene, slump_mask(tmp_path / "mask.tif"))
        inside, _ = mask.read(rasterio.windows.Window(0, 0, 128, 128))
    assert values.shape == (2, 128, 128) and not nodata.any()
    # B2 is 1000 + row on the 3 m grid: bilinear on the 1.5 m grid, a ramp of half steps
    # (rounded to the file's integer type)
    rows = np.arange(10, 100)
    np.testing.assert_array_equal(values[0, rows, 5], np.round(1000 + rows / 2 - 0.25))
    np.testing.assert_allclose(values[1, 0, 1:9], 10 + (np.arange(1, 9) + 0.5) * 1.5 / 100,
                               atol=1e-4)  # the slope raster follows the new grid
    assert inside.sum() == 4 * 60 and inside[20:40, 60:72].all()  # nearest: each pixel 2 x 2
    with Scene(path, ["B2"], band_names=NAMES, resolution_m=3.0) as native:
        assert native.width == 64 and native.file_grid[1] == native.transform


@pytest.mark.parametrize("declared", [0, None])  # in the file, or only in the config
def test_no_data_at_a_scenes_edge_is_not_blended_into_its_neighbours(tmp_path, declared):
    image = np.full((4, 32, 32), 1000, np.uint16)
    image[:, :, :8] = 0  # no data on the left
    path = write_geotiff(tmp_path / "a.tif", image, nodata=declared, descriptions=None)
    with Scene(path, NAMES, band_names=NAMES, nodata=0, resolution_m=1.5) as scene:
        values, nodata = scene.read()
    assert values.shape == (4, 64, 64)
    assert nodata[:, :16].all() and not nodata[:, 16:].any()
    assert (values[:, :, 16:] == 1000).all()  # the valid pixels keep their value


def test_a_rotated_image_is_not_resampled_onto_north_up_axes(tmp_path):
    path = tmp_path / "rotated.tif"
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=1, dtype="uint16",
                       crs="EPSG:32608", transform=Affine(3, 1, ORIGIN[0], 1, -3, ORIGIN[1])):
        pass
    with pytest.raises(InputError, match=r"rotated\.tif: resolution_m needs a north-up image"):
        Scene(path, ["B2"], band_names=["B2"], resolution_m=1.5)


def test_a_mask_must_share_the_files_grid_even_when_resampled(tmp_path):
    path = scene_with_dem(tmp_path)
    mask = np.zeros((1, 32, 32), np.uint8)
    other = write_geotiff(tmp_path / "coarse_mask.tif", mask, resolution=6.0, nodata=None,
                          descriptions=None)
    with Scene(path, ["B2"], band_names=NAMES, resolution_m=1.5) as scene, \
            pytest.raises(InputError, match=r"coarse_mask\.tif: mask grid \(32x32, 6 m\) "
                                            r"differs from the scene a\.tif"):
        GridMask(scene, other)


def test_prepare_and_predict_on_the_resampled_grid(tmp_path):
    path = scene_with_dem(tmp_path)
    (tmp_path / "masks").mkdir()
    slump_mask(tmp_path / "masks" / "a_mask.tif")
    data = {"name": "t", "sensor": None, "bands": ["B2", "slope"], "band_names": NAMES,
            "auxiliary": AUX, "scenes": str(path), "masks": str(tmp_path / "masks"),
            "resolution_m": 1.5, "tiles": {"size": 64, "overlap": 0,
                                           "max_nodata_fraction": 0.5, "location_block_m": 1000}}
    assert prepare_dataset(data, tmp_path / "out").tiles == 4
    store = TileStore(tmp_path / "out")
    assert sum(int(store.read(i)[1][0].sum()) for i in range(len(store))) == 4 * 60
    assert (store.tiles["maxx"] - store.tiles["minx"]).eq(96.0).all()

    model = export_six_band_model(tmp_path / "model", resolution_m=1.5)
    assert yaml.safe_load((model / "model.yaml").read_text())["resolution_m"] == 1.5
    done = run_command("predict", f"model={model}", f"input={tmp_path / 's2'}",
                       f"output={tmp_path / 'pred'}", "band_names=[B2,B3,B4,B8]",
                       "window=64", "overlap=16")
    assert done.returncode == 0, done.stderr[-2000:]
    with rasterio.open(tmp_path / "pred" / "a_probability.tif") as src:
        assert (src.width, src.height, src.transform.a) == (128, 128, 1.5)
