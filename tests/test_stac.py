"""STAC input: an ItemCollection's items read as scenes (band assets by name, processing
baseline offset removed), and a search spec that saves what it finds."""

import datetime as dt
import json

import numpy as np
import pystac
import pytest
import rasterio
from cli import run_command
from test_predict import BANDS, export

from fakes import texture_scene, write_geotiff
from rts_ssl.data.scenes import Scene, find_scenes
from rts_ssl.data.stac import baseline_offset, scenes_input
from rts_ssl.errors import InputError

KEYS = {"earth_search": ["blue", "green", "red", "nir"],
        "planetary_computer": ["B02", "B03", "B04", "B08"]}


def item(folder, name, array, baseline, style, date):
    """An item whose bands are single-band COG assets named in ``style``."""
    folder.mkdir(parents=True, exist_ok=True)
    new = pystac.Item(name, None, None, date, {"s2:processing_baseline": baseline,
                                               "platform": "sentinel-2b"})
    for band, (key, common) in enumerate(zip(KEYS[style], BANDS, strict=True)):
        href = write_geotiff(folder / f"{name}_{key}.tif", array[band:band + 1],
                             descriptions=None)
        extra = {"eo:bands": [{"name": key, "common_name": common}]} if style == "earth_search" \
            else {}
        new.add_asset(key, pystac.Asset(str(href), media_type=pystac.MediaType.COG,
                                        roles=["data"], extra_fields=extra))
    # what must not be read as bands: an RGB preview and JPEG 2000 copies
    visual = write_geotiff(folder / f"{name}_visual.tif", (array[:3] // 20).astype("uint8"),
                           descriptions=None)
    rgb = {"eo:bands": [{"common_name": c} for c in ("red", "green", "blue")]}
    new.add_asset("visual", pystac.Asset(str(visual), media_type=pystac.MediaType.COG,
                                         roles=["visual"], extra_fields=rgb))
    new.add_asset("red-jp2", pystac.Asset(str(folder / "red.jp2"), media_type="image/jp2",
                                          roles=["data"]))
    return new


@pytest.fixture
def collection(tmp_path):
    """The same ground twice: baseline 03.01 (Earth Search keys) and 05.09 (+1000 DN,
    Planetary Computer keys); and the equivalent local 4-band GeoTIFF."""
    array = texture_scene(4, 160)
    items = [item(tmp_path / "assets", "S2B_20210701", array, "03.01", "earth_search",
                  dt.datetime(2021, 7, 1, tzinfo=dt.UTC)),
             item(tmp_path / "assets", "S2B_20230701", array + 1000, "05.09",
                  "planetary_computer", dt.datetime(2023, 7, 1, tzinfo=dt.UTC))]
    path = tmp_path / "search.json"
    path.write_text(json.dumps(pystac.ItemCollection(items).to_dict()))
    (tmp_path / "local").mkdir()
    local = write_geotiff(tmp_path / "local" / "S2B_20210701.tif", array)
    return path, local, array


def test_items_read_as_scenes_in_one_radiometry(collection):
    path, _, array = collection
    scenes = find_scenes(path)
    assert [s.name for s in scenes] == ["S2B_20210701.vrt", "S2B_20230701.vrt"]
    for scene_path in scenes:
        with Scene(scene_path, ["nir", "red", "green", "blue"]) as scene:
            image, _ = scene.read()
            assert scene.acquisition_date() == scene_path.stem[4:8] + "-07-01"
        np.testing.assert_array_equal(image, array[::-1].astype(np.float32))


def test_a_stac_prediction_equals_the_local_files_prediction(tmp_path, collection):
    path, local, _ = collection
    model = export(tmp_path)
    for name, source in (("stac", path), ("local", local)):
        done = run_command("predict", f"model={model}", f"input={source}",
                           f"output={tmp_path / name}", "window=64", "overlap=16")
        assert done.returncode == 0, done.stderr
    with rasterio.open(tmp_path / "stac" / "S2B_20210701_probability.tif") as stac, \
            rasterio.open(tmp_path / "local" / "S2B_20210701_probability.tif") as files:
        np.testing.assert_array_equal(stac.read(), files.read())
        assert stac.transform == files.transform and stac.crs == files.crs
        assert stac.tags()["SENSOR"] == "sentinel-2b"
        local = files.read()
    with rasterio.open(tmp_path / "stac" / "S2B_20230701_probability.tif") as later:
        np.testing.assert_array_equal(later.read(), local)  # +1000 DN removed


def test_baseline_offset_only_where_the_item_still_carries_it():
    def offset(**properties):
        return baseline_offset(pystac.Item("i", None, None, dt.datetime(2023, 1, 1), properties))
    assert offset(**{"s2:processing_baseline": "04.00"}) == -1000
    assert offset(**{"s2:processing_baseline": "03.01"}) == 0
    harmonised = {"s2:processing_baseline": "05.09", "earthsearch:boa_offset_applied": True}
    assert offset(**harmonised) == 0
    assert offset() == 0  # not Sentinel-2


def test_a_search_saves_its_items_and_reads_them(tmp_path, collection, monkeypatch):
    import pystac_client

    path, _, _ = collection
    asked = {}

    class Found:
        def item_collection(self):
            return pystac.ItemCollection.from_file(str(path))

    class Client:
        def search(self, **query):
            asked.update(query)
            return Found()

    monkeypatch.setattr(pystac_client.Client, "open", lambda url: Client())
    spec = {"url": "https://stac.example", "collections": ["sentinel-2-l2a"],
            "bbox": [-135.5, 67.0, -135.0, 67.2], "datetime": "2023-07", "max_cloud": 20}
    saved = scenes_input(None, spec, tmp_path / "out")
    assert saved == tmp_path / "out" / "stac_search.json"
    assert asked["query"] == {"eo:cloud_cover": {"lt": 20}}
    assert asked["bbox"] == spec["bbox"] and asked["collections"] == ["sentinel-2-l2a"]
    assert len(find_scenes(saved)) == 2
    with pytest.raises(InputError, match="not both"):
        scenes_input("scenes/", spec, tmp_path / "out")


def test_search_without_network_is_one_line(tmp_path):
    done = run_command("predict", f"model={export(tmp_path)}", "stac.url=http://127.0.0.1:9",
                       f"output={tmp_path / 'out'}")
    assert done.returncode == 2
    assert "stac.url=http://127.0.0.1:9: search failed" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_planetscope_multi_band_asset_gives_its_bands_by_common_name(tmp_path):
    array = texture_scene(4, 96)
    asset = write_geotiff(tmp_path / "ps_analytic.tif", array, descriptions=None)
    bands = [{"name": f"b{i + 1}", "common_name": c} for i, c in enumerate(BANDS)]
    ps = pystac.Item("20230701_psscene", None, None, dt.datetime(2023, 7, 1, tzinfo=dt.UTC),
                     {"platform": "PS2.SD"})
    ps.add_asset("ortho_analytic_4b_sr", pystac.Asset(
        str(asset), media_type=pystac.MediaType.COG, roles=["data", "reflectance"],
        extra_fields={"eo:bands": bands}))
    path = tmp_path / "planet.json"
    path.write_text(json.dumps(pystac.ItemCollection([ps]).to_dict()))
    (scene_path,) = find_scenes(path)
    with Scene(scene_path, ["red", "nir"]) as scene:
        image, _ = scene.read()
    np.testing.assert_array_equal(image, array[[2, 3]].astype(np.float32))
