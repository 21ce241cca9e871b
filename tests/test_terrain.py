import subprocess

import numpy as np
import pytest
import rasterio
from cli import run_command
from pyproj import Geod
from rasterio.transform import from_origin
from rasterio.windows import Window

from fakes import ORIGIN, cone_dem, texture_scene, write_geotiff
from rts_ssl.data.scenes import Scene
from rts_ssl.data.terrain import (
    TerrainSource,
    hillshade,
    pixel_spacing_m,
    relative_elevation,
    terrain_layers,
)
from rts_ssl.errors import InputError
from rts_ssl.models.export import read_info


def test_slope_of_a_cone_is_its_flank_angle():
    layers = terrain_layers(cone_dem(101, 30.0, 2.0)[0], 2.0, 2.0, ["slope"])
    rows, cols = np.mgrid[:101, :101] - 50
    flank = (np.hypot(rows, cols) > 3) & (np.hypot(rows, cols) < 45)
    assert np.allclose(layers[0][flank], 30.0, atol=0.6)


def test_slope_of_a_bowl_grows_with_distance_from_its_centre():
    rows, cols = (np.mgrid[:81, :81] - 40) * 5.0
    bowl = 0.002 * (rows**2 + cols**2)  # dz/dr = 0.004 r
    slope = terrain_layers(bowl, 5.0, 5.0, ["slope"])[0]
    assert slope[40, 40] == pytest.approx(0.0, abs=1e-6)
    assert slope[40, 60] == pytest.approx(np.degrees(np.arctan(0.004 * 100)), abs=0.05)


def test_relative_elevation_of_a_plane_is_zero_and_a_pit_is_negative():
    plane = np.add.outer(np.arange(60) * 0.5, np.arange(60) * 0.2)
    rel = relative_elevation(plane, (5, 5))
    assert np.allclose(rel[5:-5, 5:-5], 0.0, atol=1e-9)
    plane[30, 30] -= 11.0
    assert relative_elevation(plane, (5, 5))[30, 30] == pytest.approx(-11.0 * 120 / 121)


def test_hillshade_lights_slopes_facing_the_sun():
    flat = hillshade(np.zeros((5, 5)), 1.0, 1.0)
    assert np.allclose(flat, np.cos(np.radians(45.0)))
    x = np.arange(20.0)
    facing_west = np.tile(x, (20, 1))  # rises eastwards: faces west, towards a 315 deg sun
    facing_east = facing_west[:, ::-1]
    assert hillshade(facing_west, 1.0, 1.0).mean() > hillshade(facing_east, 1.0, 1.0).mean()


def test_real_dem_slope_range_and_a_hand_checked_value(shared_data):
    path = shared_data / "dem_copernicus_glo30" / "fairbanks_dem_geoid.tif"
    with rasterio.open(path) as src:
        window = Window(0, 0, src.width, src.height)
        elevation = src.read(1).astype(np.float64)
        dx, dy = pixel_spacing_m(src, window)
        slope = terrain_layers(elevation, dx, dy, ["slope"])[0]
        r, c = 180, 181
        lon = lambda col: src.transform.c + (col + 0.5) * src.transform.a  # noqa: E731
        lat = lambda row: src.transform.f + (row + 0.5) * src.transform.e  # noqa: E731
    geod = Geod(ellps="WGS84")
    width_m = geod.inv(lon(c - 1), lat(r), lon(c + 1), lat(r))[2]
    height_m = geod.inv(lon(c), lat(r - 1), lon(c), lat(r + 1))[2]
    gx = (elevation[r, c + 1] - elevation[r, c - 1]) / width_m
    gy = (elevation[r - 1, c] - elevation[r + 1, c]) / height_m
    assert slope[r, c] == pytest.approx(np.degrees(np.arctan(np.hypot(gx, gy))), rel=0.01)
    # Fairbanks lowland and the Chena ridges: gentle terrain, no cliffs
    assert slope.min() == pytest.approx(0.0, abs=0.1)
    assert 5.0 < slope.max() < 35.0
    assert np.median(slope) < 5.0


def _scene_and_dem(tmp_path):
    """A 100 px scene at 3 m and a 2 m cone DEM (same UTM CRS) centred on it."""
    scene = write_geotiff(tmp_path / "scene_2021-07-01.tif", texture_scene(4, 100))
    path = write_geotiff(tmp_path / "dem.tif", cone_dem(161, 30.0, 2.0), resolution=2.0,
                         nodata=None, descriptions=None)
    with rasterio.open(path, "r+") as dst:
        dst.transform = from_origin(ORIGIN[0] - 10, ORIGIN[1] + 10, 2.0, 2.0)
    return scene, path


def _distance_to_apex() -> np.ndarray:
    """Distance (DEM pixels) of each scene pixel centre from the cone apex at (80.5, 80.5)."""
    rows, cols = np.mgrid[:100, :100]
    return np.hypot((rows + 0.5) * 1.5 + 5 - 80.5, (cols + 0.5) * 1.5 + 5 - 80.5)


def test_scene_reads_terrain_bands_on_its_own_grid(tmp_path):
    scene_path, dem_path = _scene_and_dem(tmp_path)
    with Scene(scene_path, ["red", "slope", "nir"], dem=dem_path) as scene:
        values, nodata = scene.read()
        optical, _ = Scene(scene_path, ["red", "nir"]).read()
    assert values.dtype == np.float32 and values.shape == (3, 100, 100)
    assert np.array_equal(values[[0, 2]], optical)
    r = _distance_to_apex()
    flank = (r > 4) & (r < 70)
    assert np.allclose(values[1][flank], 30.0, atol=1.0)
    assert not nodata.any()


def test_terrain_bands_come_from_a_dem_in_another_crs_without_seams(tmp_path):
    scene_path, utm_dem = _scene_and_dem(tmp_path)
    geographic = tmp_path / "dem_4326.tif"
    with rasterio.open(utm_dem) as src:
        transform, width, height = rasterio.warp.calculate_default_transform(
            src.crs, "EPSG:4326", src.width, src.height, *src.bounds)
        profile = {**src.profile, "crs": "EPSG:4326", "transform": transform, "width": width,
                   "height": height, "nodata": np.nan}
        with rasterio.open(geographic, "w", **profile) as dst:
            rasterio.warp.reproject(rasterio.band(src, 1), rasterio.band(dst, 1),
                                    resampling=rasterio.enums.Resampling.bilinear)
    bands = ["slope", "relative_elevation", "red"]
    with Scene(scene_path, bands, dem=geographic, dem_radius_m=20) as scene:
        whole, _ = scene.read()
        top, _ = scene.read(Window(0, 0, 100, 50))
        bottom, _ = scene.read(Window(0, 50, 100, 50))
    with Scene(scene_path, bands, dem=utm_dem, dem_radius_m=20) as scene:
        native, _ = scene.read()
    seams = np.abs(np.concatenate([top, bottom], axis=1) - whole)[:, _distance_to_apex() > 4]
    assert np.all(seams.max(axis=1) <= [0.01, 0.01, 0])
    assert np.median(np.abs(whole[0] - native[0])) < 0.5  # degrees, after two resamplings


def test_terrain_band_without_a_dem_names_the_fix(tmp_path):
    scene_path, _ = _scene_and_dem(tmp_path)
    with pytest.raises(InputError, match=r"band slope not found.*dem=<DEM GeoTIFF>"):
        Scene(scene_path, ["red", "slope"])


def test_dem_without_crs_and_dem_elsewhere_are_clear_errors(tmp_path):
    scene_path, _ = _scene_and_dem(tmp_path)
    no_crs = write_geotiff(tmp_path / "nocrs.tif", cone_dem(20), crs=None, nodata=None,
                           descriptions=None)
    with pytest.raises(InputError, match="nocrs.tif: DEM has no CRS"):
        TerrainSource(no_crs)
    far = tmp_path / "far"
    far.mkdir()
    for name in ("a_2020-01-01.tif", "b_2021-01-01.tif"):
        path = write_geotiff(far / name, cone_dem(20), nodata=None, descriptions=None)
        with rasterio.open(path, "r+") as dst:
            dst.transform = from_origin(0, 0, 2.0, 2.0)
    with pytest.raises(InputError, match="scene_2021-07-01.tif: no DEM in .* overlaps"):
        Scene(scene_path, ["red", "slope"], dem=far)


def test_the_dem_closest_in_date_is_chosen_among_equals(tmp_path):
    scene_path, dem = _scene_and_dem(tmp_path)
    dems = tmp_path / "dems"
    dems.mkdir()
    for date, offset in (("2019-07-01", 0.0), ("2021-08-01", 100.0), ("2024-07-01", 0.0)):
        with rasterio.open(dem) as src:
            profile, values = src.profile, src.read()
        with rasterio.open(dems / f"dem_{date}.tif", "w", **profile) as dst:
            dst.write(values + offset)
    with Scene(scene_path, ["red", "relative_elevation"], dem=dems) as scene:
        assert scene.terrain.path.name == "dem_2021-08-01.tif"


def _cli(*args: str) -> subprocess.CompletedProcess:
    done = run_command(*args)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_optical_and_terrain_bands_run_end_to_end_on_the_synthetic_default(tiny_synthetic,
                                                                            tmp_path):
    data = ["data=synthetic_planet_dem", f"data.root={tiny_synthetic}",
            "data.synthetic.size=96", "data.tiles.size=64", f"data.prepared={tmp_path / 'p'}",
            f"paths.log_dir={tmp_path / 'logs'}", "input_size=32", "trainer.max_epochs=1"]
    _cli("pretrain", *data, "batch_size=8", "samples_per_epoch=16", "split.val_fraction=0.25")
    encoder = next((tmp_path / "logs" / "pretrain").glob("*/*/encoder"))
    _cli("finetune", *data, f"pretrained={encoder}", "batch_size=4", "samples_per_epoch=8")
    model = next((tmp_path / "logs" / "finetune").glob("*/model"))
    info = read_info(model, "model")
    assert info["bands"][-2:] == ["slope", "relative_elevation"]
    assert info["dem_radius_m"] == 100.0
    scene = tiny_synthetic / "scenes" / "banks" / "banks_p1_2023-08-04.tif"
    _cli("predict", f"model={model}", f"input={scene}", f"output={tmp_path / 'out'}",
         f"dem={tiny_synthetic / 'dem'}")
    with rasterio.open(tmp_path / "out" / f"{scene.stem}_probability.tif") as src:
        assert src.shape == (96, 96) and src.read(1).max() > 0
