"""inventory: every scene's predicted slumps in one table in one CRS, same-date overlaps
merged, and a STAC catalogue of the maps."""

import datetime as dt

import geopandas as gpd
import pystac
import pytest
import rasterio
from cli import run_command
from test_predict import export

from fakes import ORIGIN, texture_scene, write_geotiff
from rts_ssl.models.export import weights_id


@pytest.fixture
def maps(tmp_path):
    """Three scenes mapped by a model that calls everything a slump: two overlapping scenes
    of 2023-07-01 (shifted by 150 m) and the first place again on 2023-08-15."""
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    places = {"s2_20230701_a": ORIGIN, "s2_20230701_b": (ORIGIN[0] + 150, ORIGIN[1]),
              "s2_20230815_a": ORIGIN}
    for name, origin in places.items():
        path = write_geotiff(scenes / f"{name}.tif", texture_scene(4, 100), origin=origin)
        with rasterio.open(path, "r+") as dst:
            dst.update_tags(SPACECRAFT_NAME="Sentinel-2B")
    model = export(tmp_path, constant=5.0)
    done = run_command("predict", f"model={model}", f"input={scenes}",
                       f"output={tmp_path / 'maps'}", "window=64", "overlap=16")
    assert done.returncode == 0, done.stderr
    return tmp_path / "maps", model


def test_inventory_merges_same_date_overlaps_in_one_crs(tmp_path, maps):
    folder, model = maps
    done = run_command("inventory", f"input={folder}", f"output={tmp_path / 'inv' / 'rts.parquet'}")
    assert done.returncode == 0, done.stderr
    assert "3 scenes, 3 polygons -> 2 slumps (1 merged" in done.stdout
    slumps = gpd.read_parquet(tmp_path / "inv" / "rts.parquet").sort_values("date")
    assert slumps.crs.to_epsg() == 3413
    july, august = slumps.iloc[0], slumps.iloc[1]
    assert july["scene"] == "s2_20230701_a.tif,s2_20230701_b.tif" and july["scenes"] == 2
    assert august["scenes"] == 1 and august["date"] == "2023-08-15"
    # 300 m x 300 m scenes overlapping by 150 m: the union is 450 m x 300 m
    assert july["area_m2"] == pytest.approx(450 * 300, rel=0.02)
    assert august["area_m2"] == pytest.approx(300 * 300, rel=0.02)
    assert july["max_prob"] == pytest.approx(1.0, abs=0.01)
    assert set(slumps["sensor"]) == {"Sentinel-2B"}
    assert set(slumps["model"]) == {weights_id(model)}
    gpkg = gpd.read_file(tmp_path / "inv" / "rts.gpkg", layer="slumps")
    assert len(gpkg) == 2 and gpkg.crs.to_epsg() == 3413


def test_inventory_catalogue_lists_each_scene_map(tmp_path, maps):
    folder, model = maps
    done = run_command("inventory", f"input=[{folder}]", f"output={tmp_path / 'rts.parquet'}",
                       "crs=EPSG:4326")
    assert done.returncode == 0, done.stderr
    catalog = pystac.Catalog.from_file(str(tmp_path / "rts_stac" / "catalog.json"))
    items = {item.id: item for item in catalog.get_items(recursive=True)}
    assert set(items) == {"s2_20230701_a", "s2_20230701_b", "s2_20230815_a"}
    item = items["s2_20230815_a"]
    assert item.datetime == dt.datetime(2023, 8, 15, tzinfo=dt.UTC)
    assert item.properties["platform"] == "Sentinel-2B"
    assert item.properties["rts_ssl:model"] == weights_id(model)
    assert item.properties["rts_ssl:slumps"] == 1
    assert item.properties["proj:code"] == "EPSG:32608"
    asset = item.assets["probability"]
    assert asset.media_type == pystac.MediaType.COG
    with rasterio.open(asset.get_absolute_href()) as src:  # relative hrefs resolve
        assert src.tags()["RTS_SSL_MODEL"] == weights_id(model)
    assert -180 < item.bbox[0] < item.bbox[2] < 180


def test_inventory_without_maps_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    done = run_command("inventory", f"input={tmp_path / 'empty'}")
    assert done.returncode == 2
    assert "no predicted slumps (*_slumps.gpkg) found" in done.stderr
