import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.features import rasterize

from rts_ssl.data.sensors import SENTINEL2_BANDS
from rts_ssl.data.synthetic import DATES, REGIONS, ensure_synthetic, lognormal_slump_areas
from rts_ssl.files import lock_beside


def read(path):
    with rasterio.open(path) as src:
        return src.read(), src.profile, src.descriptions, src.tags()


def test_layout_and_geotiff_format(tiny_synthetic):
    scenes = sorted((tiny_synthetic / "scenes").rglob("*.tif"))
    assert len(scenes) == len(REGIONS) * 2 * len(DATES)
    assert {p.parent.name for p in scenes} == {r.name for r in REGIONS}
    values, profile, names, tags = read(tiny_synthetic / "scenes/peel/peel_p0_2019-07-21.tif")
    assert names == ("blue", "green", "red", "nir") and profile["dtype"] == "uint16"
    assert profile["nodata"] == 0 and profile["crs"].to_epsg() == 32608
    assert values.shape == (4, 96, 96) and tags["ACQUISITION_DATE"] == "2019-07-21"
    epsgs = {read(p)[1]["crs"].to_epsg() for p in scenes}
    assert epsgs == {r.epsg for r in REGIONS}  # each region in its own UTM zone


def test_slump_polygons_are_valid_matched_and_grow(tiny_synthetic):
    slumps = gpd.read_file(tiny_synthetic / "labels.gpkg", layer="slumps")
    stems = {p.stem for p in (tiny_synthetic / "scenes").rglob("*.tif")}
    assert slumps.crs.to_epsg() == 4326 and slumps.is_valid.all() and len(slumps) > 10
    assert set(slumps["image_id"]) <= stems
    areas = {}
    for region in REGIONS:
        part = slumps[slumps["region"] == region.name].to_crs(region.epsg)
        np.testing.assert_allclose(part.area, part["area_m2"], rtol=1e-6)
        areas.update(part.groupby("slump_id")["area_m2"].apply(list).to_dict())
    growing = [a for a in areas.values() if len(a) > 1]
    assert growing and all(np.all(np.diff(a) > 0) for a in growing)
    lookalikes = gpd.read_file(tiny_synthetic / "labels.gpkg", layer="lookalikes")
    assert {"river_bank", "sandy_shore", "stabilised_scar"} <= set(lookalikes["kind"])


def test_area_distribution_matches_real_inventories():
    areas = lognormal_slump_areas(np.random.default_rng(0), 200_000)
    p10, p50, p90 = np.percentile(areas, [10, 50, 90])
    assert p50 == pytest.approx(6000, rel=0.05)
    assert 700 < p10 < 1300 and 35_000 < p90 < 55_000


def test_slumps_are_bare_and_rare(tiny_synthetic):
    slumps = gpd.read_file(tiny_synthetic / "labels.gpkg", layer="slumps")
    inside_ndvi, outside_ndvi, fraction = [], [], []
    for path in sorted((tiny_synthetic / "scenes").rglob("*.tif")):
        values, profile, _, _ = read(path)
        polys = slumps[slumps["image_id"] == path.stem].to_crs(profile["crs"])
        if polys.empty:
            continue
        inside = rasterize(polys.geometry, (96, 96), transform=profile["transform"]) > 0
        red, nir = values[2].astype(float), values[3].astype(float)
        ndvi = (nir - red) / (nir + red + 1e-9)
        valid = values[0] > 0
        inside_ndvi.append(np.median(ndvi[inside & valid]))
        outside_ndvi.append(np.median(ndvi[~inside & valid]))
        fraction.append(inside.mean())
    assert np.median(inside_ndvi) < np.median(outside_ndvi) - 0.2
    assert np.mean(fraction) < 0.1


def test_deterministic_by_seed_and_cached(tmp_path, tiny_synthetic):
    again = ensure_synthetic(tmp_path / "again", "planet", 0, 96)
    other = ensure_synthetic(tmp_path / "other", "planet", 1, 96)
    rel = "scenes/yamal/yamal_p1_2021-07-29.tif"
    np.testing.assert_array_equal(read(again / rel)[0], read(tiny_synthetic / rel)[0])
    assert not np.array_equal(read(other / rel)[0], read(again / rel)[0])
    stamp = (again / rel).stat().st_mtime_ns
    ensure_synthetic(tmp_path / "again", "planet", 0, 96)
    assert (again / rel).stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="made with other parameters"):
        ensure_synthetic(tmp_path / "again", "planet", 2, 96)
    assert not list(tmp_path.glob(".*tmp*"))


def test_sentinel2_flavour_has_13_named_bands(tmp_path):
    root = ensure_synthetic(tmp_path / "s2", "sentinel2", 0, 64)
    values, profile, names, _ = read(next((root / "scenes").rglob("*.tif")))
    assert names == SENTINEL2_BANDS and values.shape[0] == 13
    assert profile["transform"].a == 10.0


def test_each_scene_has_a_dem_where_slumps_are_bowls_deepening_in_time(tiny_synthetic):
    slumps = gpd.read_file(tiny_synthetic / "labels.gpkg", layer="slumps")
    first, last = f"peel_p0_{DATES[0]}", f"peel_p0_{DATES[-1]}"
    dems = {stem: read(tiny_synthetic / "dem" / "peel" / f"{stem}_dem.tif") for stem in
            (first, last)}
    scene_profile = read(tiny_synthetic / "scenes" / "peel" / f"{last}.tif")[1]
    elevation, profile, names, tags = dems[last]
    assert names == ("elevation",) and profile["dtype"] == "float32"
    assert profile["transform"] == scene_profile["transform"] and tags["ACQUISITION_DATE"]
    polys = slumps[slumps["image_id"] == last].to_crs(profile["crs"])
    inside = rasterize(polys.geometry, (96, 96), transform=profile["transform"]) > 0
    change = dems[last][0][0] - dems[first][0][0]
    assert change.max() <= 0  # the ground only ever loses material
    assert change[inside].min() < -2.0 and np.all(change[~inside] == 0)


def test_an_older_synthetic_version_is_made_again(tmp_path):
    import json

    root = ensure_synthetic(tmp_path / "old", "planet", 0, 64)
    marker = json.loads((root / "COMPLETE").read_text())
    (root / "COMPLETE").write_text(json.dumps({**marker, "version": 1}))
    (root / "stale.txt").write_text("from version 1")
    ensure_synthetic(root, "planet", 0, 64)
    assert not (root / "stale.txt").exists()
    assert json.loads((root / "COMPLETE").read_text()) == marker


def test_runs_that_need_one_set_at_once_take_turns(tmp_path, caplog):
    from test_files import waits_for_another_process

    root = tmp_path / "planet"
    made = waits_for_another_process(lock_beside(root), caplog,
                                     lambda: ensure_synthetic(root, "planet", 0, 64), root)
    assert made == root and (root / "COMPLETE").is_file()
