import logging
import zipfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import LineString, Point, Polygon, box

from fakes import ORIGIN, square_polygons
from rts_ssl.data.labels import LabelIndex, rasterize_polygons, read_polygons
from rts_ssl.errors import InputError

X, Y = ORIGIN


@pytest.mark.parametrize("suffix", [".gpkg", ".shp", ".geojson"])
def test_formats_read_with_crs(tmp_path, suffix):
    path = square_polygons(tmp_path / f"p{suffix}", [(X, Y - 90, 30), (X + 60, Y - 60, 15)],
                           image_id=["a", "b"])
    frame = read_polygons(path)
    assert len(frame) == 2 and frame.crs.to_epsg() == 32608
    assert sorted(frame.area.round().tolist()) == [225.0, 900.0]


def test_zipped_and_nested_zipped_shapefiles(tmp_path):
    square_polygons(tmp_path / "a.shp", [(X, Y - 90, 30)])
    square_polygons(tmp_path / "b.shp", [(X, Y - 30, 10), (X + 30, Y - 30, 10)],
                    crs="EPSG:32609")
    inner = tmp_path / "inner.zip"
    with zipfile.ZipFile(inner, "w") as z:
        for f in tmp_path.glob("b.*"):
            z.write(f, f"sub/{f.name}")
    outer = tmp_path / "outer.zip"
    with zipfile.ZipFile(outer, "w") as z:
        for f in tmp_path.glob("a.*"):
            z.write(f, f.name)
        z.write(inner, "nested/inner.zip")
        z.writestr("__MACOSX/._a.shp", b"junk")
    frame = read_polygons(outer)
    assert len(frame) == 3 and frame.crs.to_epsg() == 32608  # b reprojected to a's CRS
    assert frame["source"].str.contains("inner.zip").sum() == 2


def test_cleaning_repairs_invalid_and_drops_empty_and_non_polygon(tmp_path, caplog):
    bowtie = Polygon([(X, Y), (X + 10, Y + 10), (X + 10, Y), (X, Y + 10)])
    geoms = [bowtie, box(X, Y, X + 5, Y + 5), Point(X, Y), LineString([(X, Y), (X + 1, Y)]),
             Polygon()]
    path = tmp_path / "mixed.gpkg"
    gpd.GeoDataFrame({"k": range(5)}, geometry=geoms, crs="EPSG:32608").to_file(path)
    with caplog.at_level(logging.INFO):
        frame = read_polygons(path)
    assert (frame.geom_type == "Polygon").all() and frame.is_valid.all()
    assert len(frame) == 3  # bowtie -> two triangles, plus the box
    assert frame.area.sum() == pytest.approx(50 + 25)
    assert "repaired 1 invalid; dropped 1 empty" in caplog.text
    assert "'Point': 1" in caplog.text and "'LineString': 1" in caplog.text


def test_bad_vector_inputs(tmp_path):
    square_polygons(tmp_path / "nocrs.shp", [(0, 0, 1)], crs=None)
    with pytest.raises(InputError, match=r"nocrs\.shp: polygons have no CRS"):
        read_polygons(tmp_path / "nocrs.shp")
    (tmp_path / "junk.gpkg").write_text("nope")
    with pytest.raises(InputError, match=r"junk\.gpkg: not a readable vector file"):
        read_polygons(tmp_path / "junk.gpkg")
    with pytest.raises(InputError, match="label file not found"):
        read_polygons(tmp_path / "absent.gpkg")
    multi = tmp_path / "multi.gpkg"
    square_polygons(multi, [(0, 0, 1)])
    gpd.GeoDataFrame(geometry=[box(0, 0, 1, 1)], crs="EPSG:32608").to_file(multi, layer="other")
    with pytest.raises(InputError, match=r"has 2 layers \(multi, other\); set the layer"):
        read_polygons(multi)
    assert len(read_polygons(multi, layer="other")) == 1
    empty = tmp_path / "empty.gpkg"
    gpd.GeoDataFrame({"image_id": []}, geometry=[], crs="EPSG:4326").to_file(empty)
    assert read_polygons(empty).empty


def test_label_index_by_image_id_or_intersection():
    polys = gpd.GeoDataFrame({"image_id": ["a", "b"]},
                             geometry=[box(X, Y - 30, X + 30, Y), box(X, Y - 30, X + 30, Y)],
                             crs="EPSG:32608").to_crs("EPSG:4326")
    bounds = (X - 100, Y - 100, X + 100, Y + 100)
    by_id, area = LabelIndex(polys).for_scene("a", bounds, "EPSG:32608")
    assert len(by_id) == 1 and area is None and by_id.crs.to_epsg() == 32608
    spatial, _ = LabelIndex(polys.drop(columns="image_id")).for_scene("a", bounds, "EPSG:32608")
    assert len(spatial) == 2
    far, _ = LabelIndex(polys.drop(columns="image_id")).for_scene(
        "a", (X + 1e4, Y, X + 2e4, Y + 1e4), "EPSG:32608")
    assert far.empty


def test_rasterize_pixel_centres():
    from rasterio.transform import from_origin

    mask = rasterize_polygons([box(3, -9, 9, -3)], from_origin(0, 0, 3, 3), (4, 4))
    assert mask.tolist() == [[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]


# Every RTS polygon file in the shared data: polygon count after cleaning. None = a clear
# error is expected: a study-area shapefile without .prj, 2D coordinates in geocentric
# EPSG:4978 (no map position), and a zip holding only tables (.tab), no vector file.
EXPECTED = {
    "ARTS_main_dataset_v5.0.0_commit948c69a.geojson": 2282,
    "Banks_Island_Slumps_V2.shp": 842,
    "Banks_Island_Study_Area.shp": None,
    "Coastal_slp_2011_FI(Ramage2017).zip": 287,
    "ESL_RTS_LTA_98P_cleaned.shp": 356,
    "GT_Set_Nitze_etal_2021_TrainingSet_RTS.zip": 2182,
    "RTS_Barth_etal(Barth2023).zip": 3464,
    "RTS_NESiberia(Runge2022).zip": 0,  # points only
    "269112_2017-07-20_RE1_3A_Analytic_clip_epsg4978.gpkg": None,
    "269112_2017-07-20_RE1_3A_Analytic_clip_epsg54034.shp": 41,
    "S1.zip": 244,
    "Zwieback-etal_2017(Zwieback2018).zip": None,
    "TrainingLabel_RTS_PlanetScope_Nitze_iteration001.gpkg": 2182,
    "TrainingLabel_RTS_PlanetScope_Nitze_iteration003.gpkg": 410,
}


def _polygon_files(root: Path) -> list[Path]:
    suffixes = {".shp", ".gpkg", ".geojson", ".zip", ".kmz", ".kml"}
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in suffixes)


def test_ingests_every_shared_rts_polygon_file(shared_data):
    files = _polygon_files(shared_data / "rts_labels")
    assert len(files) > 60
    counts, medians, errors = {}, [], {}
    for path in files:
        try:
            frame = read_polygons(path)
        except InputError as err:
            errors[path.name] = str(err)
            continue
        counts[path.name] = len(frame)
        if len(frame) >= 20 and "Study_Area" not in path.name:
            area = frame.to_crs(frame.estimate_utm_crs()).area
            medians.append(float(np.median(area)))
    assert set(errors) == {k for k, v in EXPECTED.items() if v is None}, errors
    assert "no CRS" in errors["Banks_Island_Study_Area.shp"]
    for name, expected in EXPECTED.items():
        if expected is not None:
            assert counts[name] == expected, name
    # Slumps are thousands to tens of thousands of m^2 in every inventory, in every CRS.
    assert len(medians) > 25
    assert all(400 < m < 50_000 for m in medians), medians
    assert 2_000 < float(np.median(medians)) < 15_000
