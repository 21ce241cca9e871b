
import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
import torch
from cli import run_command

from fakes import texture_scene, write_geotiff
from rts_ssl.data.dates import scene_date
from rts_ssl.data.normalization import BandStats
from rts_ssl.inference.ensemble import Ensemble
from rts_ssl.inference.predict import Prediction
from rts_ssl.inference.sliding import Windowing
from rts_ssl.monitoring.linking import link_tracks
from rts_ssl.monitoring.monitor import monitor
from rts_ssl.monitoring.timeseries import decimal_year, max_boundary_advance, theil_sen

BANDS = ["blue", "green", "red", "nir"]
STATS = BandStats(tuple(BANDS), (0,) * 4, (6000,) * 4, (2000,) * 4, (500,) * 4)
DATES = ["2019-07-01", "2020-07-01", "2021-07-01", "2022-07-01"]
HEIGHTS = [20, 30, 40, 50]  # px; a 20 px wide slump growing upslope from row 100
HIDDEN = 2  # on this date clouds/nodata cover the slump


def box(x0, y0, x1, y1):
    return shapely.box(x0, y0, x1, y1)


def test_linking_keeps_ids_and_records_splits_and_merges():
    tracks = link_tracks([
        ("2020", [box(0, 0, 10, 10), box(50, 0, 60, 10), box(80, 0, 85, 5)]),
        ("2021", [box(0, 0, 12, 12), box(50, 0, 54, 10), box(56, 0, 60, 10)]),
        ("2022", [box(0, 0, 14, 14), box(50, 0, 60, 10)]),
        ("2023", [box(80, 0, 86, 6), box(0, 0, 15, 15)]),
    ])
    first, second, gap, split = tracks
    assert sorted(first.geometries) == ["2020", "2021", "2022", "2023"]
    assert first.latest.equals(box(0, 0, 15, 15))
    assert split.split_from == second.id and "2022" not in split.geometries
    assert split.merged_into == second.id  # the two halves joined again
    assert sorted(second.geometries) == ["2020", "2021", "2022"]
    assert sorted(gap.geometries) == ["2020", "2023"]  # unseen in between, same id after
    assert len(tracks) == 4


def test_robust_growth_and_boundary_advance():
    years = np.array([2019.0, 2020, 2021, 2022, 2023])
    areas = np.array([1000.0, 1500, 2000, 200, 3000])  # one wrong date
    assert theil_sen(years, areas) == pytest.approx(500.0)
    assert np.isnan(theil_sen(years[:1], areas[:1]))
    assert decimal_year("2021-07-02") == pytest.approx(2021.5, abs=0.01)
    assert max_boundary_advance(box(0, 0, 10, 10), box(0, 0, 10, 25), 1.0) == \
        pytest.approx(15.0)
    assert max_boundary_advance(box(0, 0, 10, 10), box(2, 2, 8, 8), 1.0) == 0.0


def write_series(folder, hide_with="nodata"):
    """One scene per date: a bright-red slump growing upslope; on date HIDDEN it is hidden by
    ``hide_with``: "nodata", "cloud" (a cloud-mask band; the red rectangle is then half
    seen, as a cloud edge would make it) or nothing (None)."""
    folder.mkdir(parents=True, exist_ok=True)
    for k, (date, height) in enumerate(zip(DATES, HEIGHTS, strict=True)):
        array = texture_scene(5 if hide_with == "cloud" else 4, 120, seed=k)
        array[2, 100 - height:100, 40:60] = 6000
        if k == HIDDEN and hide_with == "nodata":
            array[:, 30:110, 30:70] = 0
        if hide_with == "cloud":
            array[4] = 0
            if k == HIDDEN:
                array[4, 30:110, 30:70] = 1
                array[2, 30:80, 30:70] = 3000
        names = (*BANDS, "cloud") if hide_with == "cloud" else tuple(BANDS)
        write_geotiff(folder / f"site_{date}.tif", array, descriptions=names)
    return sorted(folder.glob("*.tif"))


def red_band_model() -> Prediction:
    """Pointwise: slump where red (normalised) exceeds 6, i.e. raw red above 5000."""
    net = torch.nn.Conv2d(4, 1, 1)
    with torch.no_grad():
        net.weight.zero_()
        net.weight[0, 2] = 5.0
        net.bias.fill_(-30.0)
    return Prediction(Ensemble([net], BANDS, [STATS], 0.5, 64, False, 100.0), Windowing(64, 16))


def test_monitor_tracks_one_growing_slump_and_skips_the_hidden_date(tmp_path):
    scenes = [(scene_date(p), p) for p in write_series(tmp_path / "in")]
    result = monitor(scenes, red_band_model(), tmp_path / "out")
    assert len(result.tracks) == 1
    series = result.series.sort_values("date")
    assert list(series["date"]) == DATES
    assert list(series["observed"]) == [True, True, False, True]
    expected = [h * 20 * 9.0 for h in HEIGHTS]
    observed = series[series["observed"]]
    np.testing.assert_allclose(observed["area_m2"], [expected[i] for i in (0, 1, 3)])
    slump = result.slumps.iloc[0]
    assert slump["growth_m2_per_yr"] == pytest.approx(10 * 20 * 9.0, rel=0.01)
    assert slump["area_first_m2"] == expected[0] and slump["area_last_m2"] == expected[-1]
    assert slump["max_advance_m"] == pytest.approx(30 * 3.0)
    assert slump["first_seen"] == DATES[0] and slump["last_seen"] == DATES[-1]
    assert list(series["detected"]) == [True, True, False, True]
    assert slump["n_detected"] == 3 and slump["n_observed"] == 3
    out = tmp_path / "out"
    rows = gpd.read_file(out / "slumps_timeseries.gpkg")
    assert len(rows) == 4 and rows.crs.to_epsg() == 32608
    assert {"geometry", "area_m2", "date", "mean_prob"} <= set(rows.columns)
    assert gpd.read_file(out / "slumps.gpkg")["growth_m2_per_yr"].iloc[0] > 0
    table = pd.read_csv(out / "timeseries.csv")
    assert list(table["observed"]) == [True, True, False, True]
    assert (out / "timeseries.png").stat().st_size > 5000
    assert len(list((out / "dates").glob("*_probability.tif"))) == 4


def test_a_scene_on_another_grid_is_linked_in_the_first_scenes_crs(tmp_path):
    paths = write_series(tmp_path / "in", hide_with=None)
    with rasterio.open(paths[-1]) as src:  # the last date delivered in geographic coordinates
        transform, width, height = rasterio.warp.calculate_default_transform(
            src.crs, "EPSG:4326", src.width, src.height, *src.bounds)
        profile = {**src.profile, "crs": "EPSG:4326", "transform": transform,
                   "width": width, "height": height}
        moved = tmp_path / "in" / "site_2022-07-01_wgs84.tif"
        with rasterio.open(moved, "w", **profile) as dst:
            for band in range(1, 5):
                rasterio.warp.reproject(rasterio.band(src, band), rasterio.band(dst, band),
                                        resampling=rasterio.enums.Resampling.nearest)
            dst.descriptions = src.descriptions
    paths[-1].unlink()
    scenes = [(scene_date(p), p) for p in [*paths[:-1], moved]]
    result = monitor(scenes, red_band_model(), tmp_path / "out")
    assert len(result.tracks) == 1 and result.series["observed"].all()
    assert result.series["area_m2"].iloc[-1] == pytest.approx(50 * 20 * 9.0, rel=0.1)


def test_a_cloud_band_hides_a_date_instead_of_recording_shrinkage(tmp_path):
    scenes = [(scene_date(p), p) for p in write_series(tmp_path / "in", hide_with="cloud")]
    result = monitor(scenes, red_band_model(), tmp_path / "out", cloud_band="cloud")
    series = result.series.sort_values("date")
    assert list(series["observed"]) == [True, True, False, True]
    assert series["area_m2"].iloc[HIDDEN] < HEIGHTS[HIDDEN] * 20 * 9.0  # seen shrunken
    assert result.slumps["growth_m2_per_yr"].iloc[0] == pytest.approx(1800.0, rel=0.01)
    unaware = monitor(scenes, red_band_model(), tmp_path / "unaware", overwrite=True)
    assert unaware.series["observed"].all()


def _monitor_cli(tmp_path, *args):
    return run_command("monitor", "model=unused",
                           f"output={tmp_path / 'out'}", f"paths.log_dir={tmp_path}", *args)


def test_cli_one_line_errors_for_one_date_and_unparseable_dates(tmp_path):
    paths = write_series(tmp_path / "in")
    done = _monitor_cli(tmp_path, f"input={paths[0]}")
    assert done.returncode == 2
    assert "site_2019-07-01.tif: monitor needs scenes of at least two dates" in done.stderr
    undated = write_geotiff(tmp_path / "in" / "undated.tif", texture_scene(4, 32))
    done = _monitor_cli(tmp_path, f"input={tmp_path / 'in'}")
    assert done.returncode == 2 and "undated.tif: no date in its metadata" in done.stderr
    undated.unlink()
    done = _monitor_cli(tmp_path, f"input={tmp_path / 'in'}",
                        "date_pattern='_(?P<date>\\d{8})'")
    assert done.returncode == 2 and "no date matching date_pattern" in done.stderr
    assert not (tmp_path / "out").exists()


def test_timeseries_plot_gives_each_slump_a_colour_and_breaks_winters(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from rts_ssl.monitoring import figures

    dates = ["2020-07-01", "2020-08-15", "2021-07-01", "2021-08-15"]
    series = pd.DataFrame([{"slump_id": i, "date": d, "area_m2": 100.0 * (i + 1) + k,
                            "observed": True} for i in range(12) for k, d in enumerate(dates)])
    monkeypatch.setattr(figures.plt, "close", lambda fig: None)  # keep the figure to look at
    figures.render_timeseries(series, tmp_path / "t.png")
    ax = plt.gcf().axes[0]
    drawn = [line for line in ax.lines if len(line.get_xdata())]
    assert all(len(line.get_xdata()) == 2 for line in drawn)  # one line per summer
    assert len(drawn) == 24
    colours = {line.get_label(): line.get_color() for line in drawn
               if line.get_label().startswith("slump")}
    assert len(colours) == 12 and len(set(colours.values())) == 12
    plt.close("all")
