"""Auxiliary rasters by name, radiometric offsets, no-data values and scene tables."""


import numpy as np
import pytest
import rasterio
from cli import run_command
from rasterio.transform import from_origin

from fakes import ORIGIN, ramp_scene, write_geotiff
from rts_ssl.data.normalization import compute_band_stats
from rts_ssl.data.prepare import prepare_dataset
from rts_ssl.data.scenes import Scene
from rts_ssl.data.tiles import TileStore
from rts_ssl.errors import InputError

AUX = [{"path": "../dem/{stem}.tif", "bands": ["slope", "relative_elevation"]}]


def scene_with_dem(root, name="a", size=64, dem_resolution=3.0, dem_crs="EPSG:32608"):
    """``s2/<name>.tif`` (4 bands, no descriptions) and ``dem/<name>.tif`` (slope = 10 +
    column in metres / 100, relative elevation = 7), on the scene grid unless told."""
    (root / "s2").mkdir(parents=True, exist_ok=True)
    (root / "dem").mkdir(exist_ok=True)
    scene = write_geotiff(root / "s2" / f"{name}.tif", ramp_scene(size=size), descriptions=None)
    cells = int(size * 3.0 / dem_resolution)
    x_m = (np.arange(cells) + 0.5) * dem_resolution
    slope = np.broadcast_to(10 + x_m / 100, (cells, cells))
    layers = np.stack([slope, np.full((cells, cells), 7.0)]).astype(np.float32)
    left, top = ORIGIN
    if dem_crs != "EPSG:32608":  # a DEM in another CRS covering the scene with a margin
        west, south, east, north = rasterio.warp.transform_bounds(
            "EPSG:32608", dem_crs, left - 30, top - size * 3 - 30, left + size * 3 + 30, top + 30)
        left, top = west, north
        cells = int(max(east - west, north - south) / dem_resolution) + 1
        layers = np.full((2, cells, cells), 7.0, np.float32)
    with rasterio.open(root / "dem" / f"{name}.tif", "w", driver="GTiff", width=cells,
                       height=cells, count=2, dtype="float32", crs=dem_crs,
                       transform=from_origin(left, top, dem_resolution, dem_resolution)) as dst:
        dst.write(layers)
    return scene


def test_auxiliary_bands_by_name_beside_file_bands(tmp_path):
    path = scene_with_dem(tmp_path)
    with Scene(path, ["slope", "B4", "relative_elevation"], band_names=["B2", "B3", "B4", "B8"],
               auxiliary=AUX) as scene:
        values, nodata = scene.read()
    assert values.shape == (3, 64, 64) and not nodata.any()
    np.testing.assert_allclose(values[0, 0], 10 + (np.arange(64) + 0.5) * 3 / 100, rtol=1e-6)
    np.testing.assert_array_equal(values[1], ramp_scene(size=64)[2])  # B4 = third file band
    assert (values[2] == 7).all()


def test_auxiliary_on_another_grid_is_resampled_onto_the_scene(tmp_path):
    coarse = scene_with_dem(tmp_path / "coarse", dem_resolution=6.0)
    with Scene(coarse, ["B2", "slope"], band_names=["B2", "B3", "B4", "B8"],
               auxiliary=AUX) as scene:
        values, _ = scene.read(rasterio.windows.Window(8, 8, 48, 48))
    expected = 10 + (np.arange(8, 56) + 0.5) * 3 / 100
    np.testing.assert_allclose(values[1, 0], expected, atol=0.02)  # bilinear of a ramp
    other_crs = scene_with_dem(tmp_path / "crs", dem_crs="EPSG:3413")
    with Scene(other_crs, ["B2", "relative_elevation"], band_names=["B2", "B3", "B4", "B8"],
               auxiliary=AUX) as scene:
        values, nodata = scene.read(rasterio.windows.Window(8, 8, 48, 48))
    assert np.allclose(values[1], 7.0) and not nodata.any()
    partial = scene_with_dem(tmp_path / "partial", size=64)
    with rasterio.open(tmp_path / "partial" / "dem" / "a.tif") as src:  # DEM of the left half
        profile, half = src.profile, src.read()[:, :, :32]
    profile.update(width=32)
    with rasterio.open(tmp_path / "partial" / "dem" / "a.tif", "w", **profile) as dst:
        dst.write(half)
    with Scene(partial, ["B2", "slope"], band_names=["B2", "B3", "B4", "B8"],
               auxiliary=AUX) as scene:
        values, nodata = scene.read()
    assert nodata[:, 32:].all() and not nodata[:, :32].any()  # outside the DEM: no data


def test_missing_or_off_grid_auxiliary_raster_is_a_one_line_error(tmp_path):
    path = scene_with_dem(tmp_path)
    (tmp_path / "dem" / "a.tif").unlink()
    with pytest.raises(InputError, match=r"dem/a\.tif: auxiliary raster for band slope of "
                                         r"a\.tif not found"):
        Scene(path, ["B2", "slope"], band_names=["B2", "B3", "B4", "B8"], auxiliary=AUX)
    write_geotiff(tmp_path / "far.tif", np.ones((2, 8, 8), np.float32), descriptions=None,
                  origin=(ORIGIN[0] + 1e5, ORIGIN[1]))
    far = [{"path": str(tmp_path / "far.tif"), "bands": ["slope", "relative_elevation"]}]
    with pytest.raises(InputError, match=r"far\.tif: does not overlap the scene .*off-grid"):
        Scene(path, ["B2", "slope"], band_names=["B2", "B3", "B4", "B8"], auxiliary=far)
    with pytest.raises(InputError, match=r"auxiliary: entry .* needs a path pattern"):
        Scene(path, ["B2"], band_names=["B2", "B3", "B4", "B8"], auxiliary=[{"path": "x"}])


def test_offsets_number_band_mapping_metadata_and_detection(tmp_path):
    names = ["B2", "B3", "B4", "B8"]
    dark = ramp_scene(size=16)  # 1000-4015 DN
    dark[:, :4] = 150  # water: dark without the baseline-04.00 offset
    plain = write_geotiff(tmp_path / "plain.tif", dark, descriptions=None)
    shifted = write_geotiff(tmp_path / "shifted.tif", dark + 1000, descriptions=None)
    with Scene(plain, ["B4"], band_names=names, offset=-1000) as scene:
        assert scene.read()[0][0, 8, 0] == dark[2, 8, 0] - 1000
    with Scene(plain, ["B2", "B4"], band_names=names, offset={"B04": 5}) as scene:
        assert list(scene.read()[0][:, 8, 0]) == [dark[0, 8, 0], dark[2, 8, 0] + 5]
    for path, expected in ((plain, 0), (shifted, -1000)):
        with Scene(path, names, band_names=names, offset="detect") as scene:
            assert scene.offsets == [expected] * 4
            assert scene.read()[0][0, 8, 0] == dark[0, 8, 0]  # one radiometry
    with rasterio.open(shifted, "r+") as dst:
        for band in range(1, 5):
            dst.update_tags(band, BOA_ADD_OFFSET="-1000")
    with Scene(shifted, ["B2"], band_names=names) as scene:  # metadata, no option needed
        assert scene.offsets == [-1000.0]


def test_nodata_value_for_files_that_declare_none(tmp_path):
    array = ramp_scene(size=16)
    array[:, :3] = 0
    path = write_geotiff(tmp_path / "a.tif", array, nodata=None)
    with Scene(path, ["blue"], nodata=0, offset=-1000) as scene:
        values, nodata = scene.read()
    assert nodata[:3].all() and not nodata[3:].any()
    assert (values[0, :3] == 0).all() and values[0, 5, 0] == array[0, 5, 0] - 1000


def test_prepare_reads_auxiliary_bands_and_regions_from_a_scene_table(tmp_path):
    for name in ("a", "b", "c"):
        scene_with_dem(tmp_path, name)
    (tmp_path / "chips.csv").write_text("chip,region,split\na,north,train\nb,south,train\n"
                                        "b,south,val\nc,south,test\n")
    data = {"name": "t", "sensor": None, "bands": ["B2", "slope"],
            "band_names": ["B2", "B3", "B4", "B8"], "auxiliary": AUX,
            "scenes": str(tmp_path / "s2"), "scene_table": str(tmp_path / "chips.csv"),
            "scene_table_key": "chip",
            "tiles": {"size": 64, "overlap": 0, "max_nodata_fraction": 0.5,
                      "location_block_m": 1000}}
    prepare_dataset(data, tmp_path / "out")
    store = TileStore(tmp_path / "out")
    assert dict(zip(store.tiles["image_id"], store.tiles["region"], strict=True)) == {
        "a": "north", "b": "south", "c": "south"}
    image, _ = store.read(0)
    assert image.dtype == np.float32 and image[1, 0, 0] == pytest.approx(10.015)
    (tmp_path / "bad.csv").write_text("chip,region\na,north\na,south\n")
    with pytest.raises(InputError, match=r"bad\.csv: lists scene a twice"):
        prepare_dataset({**data, "scene_table": str(tmp_path / "bad.csv")}, tmp_path / "o2")
    with pytest.raises(InputError, match=r"chips\.csv: has no column 'scene'"):
        prepare_dataset({**data, "scene_table_key": "scene"}, tmp_path / "o3")


def test_snow_dates_do_not_set_the_normalisation_scale(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "s").mkdir()
    for k in range(10):  # tundra ~300-2000 DN; every tenth date snow-covered at ~9000 DN
        array = rng.normal(900, 250, (4, 64, 64)).clip(1)
        if k == 0:
            array = rng.normal(9000, 100, (4, 64, 64))
        write_geotiff(tmp_path / "s" / f"d{k}.tif", array.astype(np.uint16))
    data = {"name": "t", "sensor": "planetscope", "bands": ["blue", "green", "red", "nir"],
            "scenes": str(tmp_path / "s"),
            "tiles": {"size": 64, "overlap": 0, "max_nodata_fraction": 0.5,
                      "location_block_m": 1000}}
    prepare_dataset(data, tmp_path / "out")
    stats = compute_band_stats(TileStore(tmp_path / "out"))
    assert max(stats.high) < 3500  # median + 8 robust sd, not ~9,000: snow is clipped
    assert all(230 < s < 270 for s in stats.std)  # the tundra's own spread (250)
    assert all(880 < m < 920 for m in stats.mean)


def export_six_band_model(directory, **metadata):
    """An exported random-init U-Net on B2-B8 + the terrain bands of ``AUX``."""
    from rts_ssl.data.normalization import BandStats
    from rts_ssl.models.encoders import EncoderSpec
    from rts_ssl.models.export import export_model
    from rts_ssl.models.segmentation import build_segmentation

    bands = ["B2", "B3", "B4", "B8", "slope", "relative_elevation"]
    spec = EncoderSpec("resnet18", "resnet18", 6, 64)
    stats = BandStats(tuple(bands), (0,) * 6, (6000,) * 6, (1000,) * 6, (500,) * 6)
    return export_model(directory, build_segmentation(spec, "full"), spec, {
        "bands": bands, "normalization": stats.to_dict(), "threshold": 0.5, "input_size": 64,
        "mode": "full", "auxiliary": AUX, **metadata})


def test_predict_finds_the_auxiliary_rasters_the_model_was_trained_with(tmp_path):
    model = export_six_band_model(tmp_path / "model")
    scene_with_dem(tmp_path, "a")
    scene_with_dem(tmp_path, "b")
    (tmp_path / "dem" / "b.tif").unlink()
    done = run_command("predict", f"model={model}",
                           f"input={tmp_path / 's2'}", f"output={tmp_path / 'pred'}",
                           "band_names=[B2,B3,B4,B8]", "window=64", "overlap=16")
    assert (tmp_path / "pred" / "a_probability.tif").is_file()
    assert not (tmp_path / "pred" / "b_probability.tif").exists()
    assert "dem/b.tif: auxiliary raster for band slope, relative_elevation of b.tif not " \
           "found" in done.stdout + done.stderr
