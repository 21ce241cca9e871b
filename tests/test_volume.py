
import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from cli import run_command
from pyproj import Transformer
from rasterio.transform import from_origin

from rts_ssl.data.labels import read_polygons
from rts_ssl.monitoring.volume import (
    coregister,
    polygon_volumes,
    read_dem_pair,
    stable_terrain,
)

CRS = "EPSG:32608"
X0, Y0, RES, SIZE = 500_000.0, 7_500_000.0, 2.0, 200
CENTRE, RADIUS, DEPTH = (X0 + 230.0, Y0 - 190.0), 30.0, 6.0
TRUE_VOLUME = -np.pi * RADIUS**2 * DEPTH / 2  # a paraboloid bowl: half its cylinder
SHIFT, OFFSET, NOISE = (2.0, -1.5), 1.5, 0.3


def terrain(x, y):
    """Rolling hills (slopes of all aspects) in metres at map coordinates."""
    return 150 + 20 * np.sin((x - X0) / 50) * np.cos((y - Y0) / 70) + 0.05 * (x - X0)


def bowl(x, y):
    r2 = ((x - CENTRE[0]) ** 2 + (y - CENTRE[1]) ** 2) / RADIUS**2
    return np.where(r2 < 1, DEPTH * (1 - r2), 0.0)


def write_dem(path, values_at, crs=CRS, origin=(X0, Y0), res=RES, size=SIZE):
    """A DEM whose pixel centres (in ``crs``) get ``values_at(x, y)`` in the CRS of X0, Y0."""
    transform = from_origin(*origin, res, res)
    cols, rows = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5)
    x, y = transform * (cols, rows)
    if crs != CRS:
        x, y = Transformer.from_crs(crs, CRS, always_xy=True).transform(x, y)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=1,
                       dtype="float32", crs=crs, transform=transform, nodata=-9999) as dst:
        dst.write(values_at(x, y).astype(np.float32), 1)
    return path


def after_values(seed=0):
    """The cut surface, displaced by SHIFT, raised by OFFSET, with noise."""
    rng = np.random.default_rng(seed)

    def values(x, y):
        x, y = x - SHIFT[0], y - SHIFT[1]
        return terrain(x, y) - bowl(x, y) + OFFSET + rng.normal(0, NOISE, np.shape(x))
    return values


@pytest.fixture
def pair(tmp_path):
    before = write_dem(tmp_path / "before.tif", terrain)
    after = write_dem(tmp_path / "after.tif", after_values())
    slump = shapely.Point(CENTRE).buffer(RADIUS, 64)
    polygons = tmp_path / "slumps.gpkg"
    gpd.GeoDataFrame({"slump": ["a"]}, geometry=[slump], crs=CRS).to_file(polygons)
    return before, after, polygons


def volumes_of(before_path, after_path, polygons_path):
    before, after, grid = read_dem_pair(before_path, after_path)
    polygons = read_polygons(polygons_path).to_crs(grid.crs)
    change, registration = coregister(before, after, stable_terrain(polygons, grid, 10), grid)
    return polygon_volumes(change, polygons, grid, registration), registration


def test_a_known_bowl_volume_is_recovered_after_shift_and_offset(pair):
    volumes, registration = volumes_of(*pair)
    assert registration.shift_east_m == pytest.approx(SHIFT[0], abs=0.3)
    assert registration.shift_north_m == pytest.approx(SHIFT[1], abs=0.3)
    assert registration.vertical_offset_m == pytest.approx(OFFSET, abs=0.1)
    assert registration.nmad_m == pytest.approx(NOISE, rel=0.3)
    row = volumes.iloc[0]
    assert row["volume_m3"] == pytest.approx(TRUE_VOLUME, rel=0.05)
    assert abs(row["volume_m3"] - TRUE_VOLUME) <= row["volume_sigma_m3"]
    assert row["max_loss_m"] == pytest.approx(DEPTH, abs=4 * NOISE)
    assert row["status"] == "ok" and row["slump"] == "a"


def test_without_horizontal_coregistration_the_shift_biases_the_volume(pair):
    before, after, grid = read_dem_pair(*pair[:2])
    polygons = read_polygons(pair[2]).to_crs(grid.crs)
    change, _ = coregister(before, after, stable_terrain(polygons, grid, 10), grid, 0)
    volume = polygon_volumes(change, polygons, grid, _)["volume_m3"].iloc[0]
    assert abs(volume - TRUE_VOLUME) > 0.05 * abs(TRUE_VOLUME)


def test_dems_on_different_grids_and_crs(pair, tmp_path):
    to_utm7 = Transformer.from_crs(CRS, "EPSG:32607", always_xy=True)
    origin = to_utm7.transform(X0 - 20, Y0 + 20)
    after = write_dem(tmp_path / "after_utm7.tif", after_values(1), crs="EPSG:32607",
                      origin=origin, res=3.0, size=150)
    volumes, _ = volumes_of(pair[0], after, pair[2])
    assert volumes["volume_m3"].iloc[0] == pytest.approx(TRUE_VOLUME, rel=0.05)


def test_polygons_outside_the_overlap_are_reported_not_zero(pair, tmp_path):
    far = shapely.Point(X0 + 5000, Y0 - 5000).buffer(20)
    polygons = tmp_path / "two.gpkg"
    gpd.GeoDataFrame(geometry=[shapely.Point(CENTRE).buffer(RADIUS, 64), far],
                     crs=CRS).to_file(polygons)
    volumes, _ = volumes_of(pair[0], pair[1], polygons)
    assert list(volumes["status"]) == ["ok", "outside DEM overlap"]
    assert np.isnan(volumes["volume_m3"].iloc[1])


def _volume_cli(tmp_path, *args):
    return run_command("volume",
                           f"paths.log_dir={tmp_path / 'logs'}", *args)


def test_cli_writes_tables_map_and_coregistration(pair, tmp_path):
    before, after, polygons = pair
    done = _volume_cli(tmp_path, f"dem_before={before}", f"dem_after={after}",
                       f"polygons={polygons}", f"output={tmp_path / 'out'}")
    assert done.returncode == 0, done.stderr[-2000:]
    out = tmp_path / "out"
    table = gpd.read_file(out / "volumes.gpkg")
    assert table.crs.to_epsg() == 32608
    assert table["volume_m3"].iloc[0] == pytest.approx(TRUE_VOLUME, rel=0.05)
    assert (out / "volumes.csv").read_text().splitlines()[0].startswith("slump,")
    assert (out / "elevation_change.png").stat().st_size > 1000
    assert '"vertical_offset_m"' in (out / "coregistration.json").read_text()


def test_cli_one_line_errors_for_dems_without_crs_or_overlap(pair, tmp_path):
    before, _, polygons = pair
    elsewhere = write_dem(tmp_path / "elsewhere.tif", terrain, origin=(X0 + 9000, Y0))
    done = _volume_cli(tmp_path, f"dem_before={before}", f"dem_after={elsewhere}",
                       f"polygons={polygons}", f"output={tmp_path / 'o'}")
    assert done.returncode == 2
    assert "elsewhere.tif: does not overlap" in done.stderr.strip().splitlines()[-1]
    no_crs = tmp_path / "no_crs.tif"
    with rasterio.open(before) as src:
        profile = {**src.profile, "crs": None}
        with rasterio.open(no_crs, "w", **profile) as dst:
            dst.write(src.read())
    done = _volume_cli(tmp_path, f"dem_before={no_crs}", f"dem_after={before}",
                       f"polygons={polygons}", f"output={tmp_path / 'o'}")
    assert done.returncode == 2 and "no_crs.tif: DEM has no CRS" in done.stderr
    assert not (tmp_path / "o").exists()


def test_real_geographic_dem_is_differenced_in_utm(shared_data, tmp_path):
    real = shared_data / "dem_copernicus_glo30" / "fairbanks_dem_geoid.tif"
    raised = tmp_path / "raised.tif"
    with rasterio.open(real) as src:
        with rasterio.open(raised, "w", **src.profile) as dst:
            dst.write(src.read() + 2.0)
        centre = shapely.Point((src.bounds.left + src.bounds.right) / 2,
                               (src.bounds.bottom + src.bounds.top) / 2)
    polygons = tmp_path / "p.gpkg"
    gpd.GeoDataFrame(geometry=[centre.buffer(0.002)], crs="EPSG:4326").to_file(polygons)
    volumes, registration = volumes_of(real, raised, polygons)
    assert volumes.crs.to_epsg() == 32606  # Fairbanks, 147.7 W: UTM zone 6N
    assert registration.vertical_offset_m == pytest.approx(2.0, abs=0.01)
    assert abs(registration.shift_east_m) < 1 and abs(registration.shift_north_m) < 1
    assert volumes["volume_m3"].iloc[0] == pytest.approx(0.0, abs=volumes["area_m2"].iloc[0]
                                                         * 0.05)
