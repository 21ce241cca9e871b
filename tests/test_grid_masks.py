"""One reader for masks on a scene's grid: training masks, references, exclusion areas."""

import numpy as np
import pytest
from rasterio.windows import Window

from fakes import ORIGIN, square_polygons, texture_scene, write_geotiff
from rts_ssl.data.grid_masks import GridMask
from rts_ssl.data.labels import read_polygons
from rts_ssl.data.scenes import Scene
from rts_ssl.errors import InputError

BANDS = ["blue", "green", "red", "nir"]


def _scene(tmp_path):
    return write_geotiff(tmp_path / "scene.tif", texture_scene(4, 60))  # 3 m, 180 m wide


def test_polygons_in_another_crs_and_the_same_mask_raster_read_alike(tmp_path):
    truth = np.zeros((1, 60, 60), np.uint8)
    truth[0, 10:30, 20:40] = 1  # 60 x 60 m
    raster = write_geotiff(tmp_path / "mask.tif", truth, nodata=None, descriptions=None)
    polygons = square_polygons(tmp_path / "p.gpkg", [(ORIGIN[0] + 60, ORIGIN[1] - 90, 60)])
    wgs84 = read_polygons(polygons).to_crs("EPSG:4326")
    with Scene(_scene(tmp_path), BANDS) as scene:
        with GridMask(scene, raster) as from_raster:
            inside, covered = from_raster.read(Window(0, 0, 60, 60))
        assert inside.sum() == 400 and covered.all()
        from_polygons = GridMask(scene, polygons=wgs84)
        assert (from_polygons.read(Window(0, 0, 60, 60))[0] == inside).mean() > 0.98
        np.testing.assert_array_equal(from_polygons.strip(10, 5), inside[10:15])


def test_training_masks_must_share_the_grid_exclusion_masks_need_not_overlap(tmp_path):
    other = write_geotiff(tmp_path / "other.tif", np.ones((1, 30, 30), np.uint8),
                          resolution=6.0, nodata=None, descriptions=None)
    far = write_geotiff(tmp_path / "far.tif", np.ones((1, 30, 30), np.uint8),
                        origin=(ORIGIN[0] + 50_000, ORIGIN[1]), nodata=None, descriptions=None)
    with Scene(_scene(tmp_path), BANDS) as scene:
        with pytest.raises(InputError, match=r"other\.tif: mask grid \(30x30, 6 m\) differs"):
            GridMask(scene, other)
        with GridMask(scene, other, same_grid=False) as resampled:  # 180 m: the whole scene
            assert resampled.strip(0, 60).all()
        with GridMask.from_file(far, scene, same_grid=False) as elsewhere:
            assert not elsewhere.strip(0, 60).any()  # covers other scenes: excludes nothing
        with pytest.raises(InputError, match="does not overlap"):
            GridMask(scene, far)
