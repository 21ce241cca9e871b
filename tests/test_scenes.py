import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from fakes import ramp_scene, write_geotiff
from rts_ssl.data.dates import date_in
from rts_ssl.data.scenes import Scene, find_scenes
from rts_ssl.errors import InputError


def test_bands_read_by_description_name_in_requested_order(tmp_path):
    path = write_geotiff(tmp_path / "s.tif", ramp_scene(),
                         descriptions=("nir", "red", "green", "blue"))
    with Scene(path, ["B2", "B3", "B4", "B8"]) as scene:
        values, nodata = scene.read(Window(0, 0, 8, 8))
    assert scene.selection.source == "descriptions"
    assert values[:, 0, 0].tolist() == [4000, 3000, 2000, 1000]  # blue, green, red, nir
    assert not nodata.any()


def test_without_descriptions_override_wins_over_sensor_order(tmp_path):
    path = write_geotiff(tmp_path / "s.tif", ramp_scene(), descriptions=None)
    with Scene(path, ["red"], sensor="planetscope") as scene:
        assert scene.selection.source == "sensor" and scene.selection.indexes == (3,)
    with Scene(path, ["red"], sensor="planetscope",
               band_names=["red", "green", "blue", "nir"]) as scene:
        assert scene.selection.source == "override" and scene.selection.indexes == (1,)


def test_missing_band_names_file_and_band(tmp_path):
    path = write_geotiff(tmp_path / "s.tif", ramp_scene())
    with pytest.raises(InputError, match=r"s\.tif: band B11 not found \(file bands: blue"):
        Scene(path, ["blue", "B11"])


def test_band_count_mismatch_and_no_names(tmp_path):
    path = write_geotiff(tmp_path / "s.tif", ramp_scene(bands=3), descriptions=None)
    with pytest.raises(InputError, match="has 3 bands but 4 band names from sensor"):
        Scene(path, ["red"], sensor="planetscope")
    with pytest.raises(InputError, match=r"no descriptions: name them with band_names=\[\.\.\.\]"):
        Scene(path, ["red"])


def test_nodata_value_and_nan_are_masked(tmp_path):
    array = ramp_scene(dtype=np.float32)
    array[:, 0, :3] = -9999
    array[2, 5, 5] = np.nan
    path = write_geotiff(tmp_path / "s.tif", array, nodata=-9999)
    with Scene(path, ["blue", "green", "red", "nir"]) as scene:
        values, nodata = scene.read(Window(0, 0, 8, 8))
    assert nodata[0, :3].all() and nodata[5, 5] and nodata.sum() == 4
    assert (values[:, nodata] == 0).all()


def test_corrupt_truncated_and_crs_less_files_give_one_line_errors(tmp_path):
    (tmp_path / "junk.tif").write_bytes(b"this is not a tiff")
    with pytest.raises(InputError, match=r"junk\.tif: not a readable GeoTIFF"):
        Scene(tmp_path / "junk.tif", ["blue"])
    full = write_geotiff(tmp_path / "full.tif", ramp_scene(size=256), tiled=True,
                         blockxsize=64, blockysize=64, compress="deflate")
    data = full.read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 2])
    with (
        pytest.raises(InputError, match=r"cut\.tif: (not a readable GeoTIFF|cannot read)"),
        Scene(tmp_path / "cut.tif", ["blue", "green", "red", "nir"]) as scene,
    ):
        scene.read(Window(0, 0, 256, 256))
    nocrs = write_geotiff(tmp_path / "nocrs.tif", ramp_scene(), crs=None)
    with pytest.raises(InputError, match=r"nocrs\.tif: has no georeference \(no CRS\)"):
        Scene(nocrs, ["blue"])


def test_dates_and_discovery(tmp_path):
    assert date_in("Sentinel2_2019-06-07.tif") == "2019-06-07"
    assert date_in("3649691_4572917_20200814_1039") == "2020-08-14"
    assert date_in("no date 1234") is None
    (tmp_path / "a").mkdir()
    write_geotiff(tmp_path / "a" / "x.tif", ramp_scene(size=8))
    assert [p.name for p in find_scenes(tmp_path)] == ["x.tif"]
    with pytest.raises(InputError, match="no scenes found"):
        find_scenes(tmp_path / "nothing" / "*.tif")


def test_real_sentinel2_bands_by_name(shared_data):
    path = sorted((shared_data / "sentinel2_arctic_slump_sites/scenes/s002").glob("*.tif"))[0]
    with rasterio.open(path) as src:
        assert src.descriptions == ("B4", "B3", "B2", "B8", "B11")
        raw = src.read()
    with Scene(path, ["B2", "B3", "B4", "B8"]) as scene:
        values, _ = scene.read(Window(0, 0, scene.width, scene.height))
    np.testing.assert_array_equal(values, raw[[2, 1, 0, 3]])
    with Scene(path, ["blue", "green", "red", "nir"]) as scene:
        assert scene.selection.indexes == (3, 2, 1, 4)
