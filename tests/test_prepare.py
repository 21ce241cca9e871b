import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from cli import run_command

from fakes import ORIGIN, ramp_scene, square_polygons, write_geotiff
from rts_ssl.data.dataset import TileDataset
from rts_ssl.data.prepare import prepare_dataset
from rts_ssl.data.tiles import TILE_COLUMNS, TileStore, tile_starts
from rts_ssl.errors import InputError
from rts_ssl.files import lock_beside

X, Y = ORIGIN
BANDS = ["blue", "green", "red", "nir"]


def make_data(root, size=300, dates=("2020-07-01", "2021-07-01"), labels=True, **tiles):
    (root / "scenes" / "north").mkdir(parents=True, exist_ok=True)
    for date in dates:
        array = ramp_scene(size=size)
        array[:, 200:, 200:] = 0  # a nodata corner
        write_geotiff(root / "scenes" / "north" / f"site_{date}.tif", array)
    data = {
        "name": "t", "sensor": "planetscope", "bands": BANDS, "scenes": str(root / "scenes"),
        "pattern": r"(?P<region>[^/]+)/(?P<location>[^/]+)_(?P<date>\d{4}-\d{2}-\d{2})\.tif$",
        "tiles": {"size": 128, "overlap": 32, "max_nodata_fraction": 0.5,
                  "location_block_m": 500, **tiles},
    }
    if labels:  # one 60 m square at pixels rows 140-160, cols 100-120 (3 m pixels)
        square_polygons(root / "labels.gpkg", [(X + 300, Y - 480, 60)])
        data["labels"] = str(root / "labels.gpkg")
    return data


def test_tile_starts_cover_the_scene_with_full_tiles():
    assert tile_starts(300, 128, 32) == [0, 96, 172]
    assert tile_starts(128, 128, 32) == [0]
    assert tile_starts(100, 128, 32) == []


def test_prepare_writes_tiles_masks_metadata_and_stats(tmp_path):
    data = make_data(tmp_path)
    summary = prepare_dataset(data, tmp_path / "out", workers=2)
    # 3x3 tiles per scene; the bottom-right tile (172:300)^2 is 80 % nodata -> dropped
    assert summary.tiles == 16 and summary.dropped_nodata == 2
    store = TileStore(tmp_path / "out")
    tiles = store.tiles
    assert list(tiles.columns) == list(TILE_COLUMNS)
    assert set(tiles["region"]) == {"north"} and set(tiles["place"]) == {"site"}
    assert set(tiles["date"]) == {"2020-07-01", "2021-07-01"}
    assert tiles["tile_id"].is_unique and (tiles["crs"] == "EPSG:32608").all()
    # the same position on two dates shares its location id
    assert tiles.groupby("location_id")["date"].nunique().min() == 2
    # tile (96, 96): the square covers rows 44-64, cols 4-24 of it
    row = tiles[(tiles["row"] == 96) & (tiles["col"] == 96)].index[0]
    image, masks = store.read(row)
    assert masks[0].sum() == 400 and masks[0, 44:64, 4:24].all()
    assert tiles.loc[row, "positive_fraction"] == pytest.approx(400 / 128**2)
    assert image[0, 0, 0] == 1000 + 96 and image[3, 5, 0] == 4000 + 101
    # nodata corner: flagged as nodata and ignored, never positive
    corner = tiles[(tiles["row"] == 172) & (tiles["col"] == 96)].index[0]
    _, masks = store.read(corner)
    assert masks[2, 28:, 104:].all() and masks[1, 28:, 104:].all() and not masks[2, :28].any()
    assert tiles.loc[corner, "nodata_fraction"] == pytest.approx(100 * 24 / 128**2)
    # statistics come from the data (ramp rows 0-299 + 1000*b) and exclude nodata zeros
    stats = store.info["normalization"]
    assert stats["low"][0] > 1000 and stats["high"][0] < 1300
    assert stats["mean"][3] == pytest.approx(4000 + 140, abs=20)
    sample = TileDataset(store)[row]
    assert abs(float(sample["image"].mean())) < 1.5 and sample["image"].shape == (4, 128, 128)
    assert not list((tmp_path / "out" / "shards").glob(".*"))  # no temporary leftovers


def test_prepare_resumes_and_refuses_other_settings(tmp_path):
    data = make_data(tmp_path)
    prepare_dataset(data, tmp_path / "out")
    shard = tmp_path / "out" / "shards" / "site_2020-07-01"
    stamp = (shard / "image.bin").stat().st_mtime_ns
    make_data(tmp_path, dates=("2022-07-01",))  # a new scene arrives
    summary = prepare_dataset(data, tmp_path / "out")
    assert summary.skipped == ["site_2020-07-01", "site_2021-07-01"]
    assert summary.prepared == ["site_2022-07-01"] and summary.tiles == 24
    assert (shard / "image.bin").stat().st_mtime_ns == stamp
    assert yaml.safe_load((tmp_path / "out" / "dataset.yaml").read_text())["n_tiles"] == 24
    other = {**data, "tiles": {**data["tiles"], "size": 64}}
    with pytest.raises(InputError, match="was prepared with other settings"):
        prepare_dataset(other, tmp_path / "out")
    assert prepare_dataset(other, tmp_path / "out", overwrite=True).tiles > 24


def test_interrupted_scene_leaves_no_shard(tmp_path, monkeypatch):
    data = make_data(tmp_path, dates=("2020-07-01",))
    import rts_ssl.data.prepare as prep

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prep, "_label_planes", boom)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(data, tmp_path / "out")
    assert not any((tmp_path / "out" / "shards").iterdir())
    assert not (tmp_path / "out" / "dataset.yaml").exists()


def test_a_run_that_prepared_nothing_does_not_block_the_next(tmp_path):
    data = make_data(tmp_path, dates=("2020-07-01",))
    square_polygons(tmp_path / "far.gpkg", [(X + 1e5, Y, 50)])
    with pytest.raises(InputError, match="touches a scene"):  # labels that touch no scene
        prepare_dataset({**data, "labels": str(tmp_path / "far.gpkg")}, tmp_path / "out")
    assert prepare_dataset(data, tmp_path / "out").tiles == 8  # the good labels: prepared


def test_temporaries_of_killed_runs_are_removed(tmp_path):
    data = make_data(tmp_path, dates=("2020-07-01",))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # a finished pid
    stale = tmp_path / "out" / "shards" / f".site_2020-07-01.tmp-{dead}"
    stale.mkdir(parents=True)
    (stale / "image.bin").write_bytes(b"")
    half = tmp_path / "out" / f".dataset.tmp-{dead}.yaml"
    half.write_text("")
    live = tmp_path / "out" / "shards" / f".other.tmp-{os.getpid()}"  # a running process
    live.mkdir()
    prepare_dataset(data, tmp_path / "out")
    assert not stale.exists() and not half.exists() and live.is_dir()


def test_a_run_waits_for_another_preparing_the_same_output_then_finds_it_done(tmp_path,
                                                                             caplog):
    """A pretraining and a fine-tuning started together on a new machine both prepared one
    dataset, and the later crashed renaming a scene's shard onto the one just committed."""
    from test_files import waits_for_another_process

    data, out = make_data(tmp_path, dates=("2020-07-01",)), tmp_path / "out"
    summary = waits_for_another_process(lock_beside(out), caplog,
                                        lambda: prepare_dataset(data, out), out)
    assert summary.tiles == 8
    assert prepare_dataset(data, out).skipped == ["site_2020-07-01"]


def test_bad_scene_is_skipped_and_reported(tmp_path, caplog):
    data = make_data(tmp_path)
    (tmp_path / "scenes" / "north" / "site_2019-07-01.tif").write_bytes(b"truncated")
    summary = prepare_dataset(data, tmp_path / "out")
    assert list(summary.failed) == ["site_2019-07-01"]
    assert "site_2019-07-01.tif: not a readable GeoTIFF" in caplog.text
    assert summary.tiles == 16


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tiles": {"size": 512}}, r"site_2020-07-01\.tif: is 300x300 px, smaller than the tile"),
        ({"bands": ["blue", "B11"]}, r"band B11 not found"),
        ({"labels": "EMPTY"}, r"empty\.gpkg: holds no polygons"),
        ({"labels": "FAR"}, r"far\.gpkg: none of its 1 polygons touches a scene"),
        ({"scenes": "NOCRS"}, r"nocrs\.tif: has no georeference \(no CRS\): set data\.pixel"),
    ],
)
def test_bad_inputs_fail_with_one_line_and_nothing_written(tmp_path, change, message):
    data = make_data(tmp_path, dates=("2020-07-01",))
    if change.get("labels") == "EMPTY":
        square_polygons(tmp_path / "empty.gpkg", [])
        change = {"labels": str(tmp_path / "empty.gpkg")}
    if change.get("labels") == "FAR":
        square_polygons(tmp_path / "far.gpkg", [(X + 1e5, Y, 50)])
        change = {"labels": str(tmp_path / "far.gpkg")}
    if change.get("scenes") == "NOCRS":
        change = {"scenes": str(write_geotiff(tmp_path / "nocrs.tif", ramp_scene(), crs=None))}
    if "tiles" in change:
        change = {"tiles": {**data["tiles"], **change["tiles"]}}
    with pytest.raises(InputError, match=message):
        prepare_dataset({**data, **change}, tmp_path / "out")
    assert not (tmp_path / "out" / "dataset.yaml").exists()
    assert not list((tmp_path / "out").glob("shards/*"))


def test_footprints_bound_the_labelled_area(tmp_path):
    data = make_data(tmp_path, dates=("2020-07-01",))
    square_polygons(tmp_path / "fp.gpkg", [(X, Y - 384, 384)], crs="EPSG:32608")
    data = {**data, "footprints": str(tmp_path / "fp.gpkg")}
    store = TileStore(tmp_path / "out") if prepare_dataset(data, tmp_path / "out") else None
    tiles = store.tiles.set_index(["row", "col"])
    assert tiles.loc[(0, 0), "labelled_fraction"] == 1.0
    assert tiles.loc[(96, 96), "labelled_fraction"] == pytest.approx(32 * 32 / 128**2)
    assert tiles.loc[(0, 172), "labelled_fraction"] == 0.0


def test_unlabelled_data_is_all_ignored(tmp_path):
    data = make_data(tmp_path, labels=False)
    prepare_dataset(data, tmp_path / "out")
    store = TileStore(tmp_path / "out")
    assert (store.tiles["labelled_fraction"] == 0).all()
    assert store.read(0)[1][1].all()


def test_raster_masks_label_their_own_scene_only(tmp_path):
    data = make_data(tmp_path, labels=False)
    (tmp_path / "scenes" / "south").mkdir()
    write_geotiff(tmp_path / "scenes" / "south" / "site_2020-07-01.tif", ramp_scene(size=300))
    masks = tmp_path / "masks" / "north"
    masks.mkdir(parents=True)
    truth = np.zeros((1, 300, 300), np.uint8)
    truth[0, 140:160, 100:120] = 1
    truth[0, :10] = 255  # the mask's own nodata: unlabelled
    write_geotiff(masks / "site_2020-07-01_mask.tif", truth, nodata=255, descriptions=None)
    summary = prepare_dataset({**data, "masks": str(tmp_path / "masks")}, tmp_path / "out")
    tiles = TileStore(tmp_path / "out").tiles
    labelled = tiles[tiles["labelled_fraction"] > 0]
    # only north/site_2020-07-01 has a mask; south's scene of the same name is not labelled
    assert set(labelled["scene"]) == {str(tmp_path / "scenes/north/site_2020-07-01.tif")}
    assert labelled["positive_fraction"].sum() * 128**2 == pytest.approx(400 * 2, abs=1)
    top = labelled[labelled["row"] == 0]
    assert top["labelled_fraction"].iloc[0] == pytest.approx(1 - 10 / 128)
    assert summary.tiles == len(tiles)
    other_grid = write_geotiff(masks / "site_2021-07-01_mask.tif", truth[:, :200],
                               nodata=255, descriptions=None)
    summary = prepare_dataset({**data, "masks": str(tmp_path / "masks")}, tmp_path / "o2")
    assert "mask grid (300x200" in summary.failed["north__site_2021-07-01"]
    assert str(other_grid) in summary.failed["north__site_2021-07-01"]


def test_cli_prepare_on_synthetic_and_one_line_error(tiny_synthetic, tmp_path):
    env_args = [f"paths.data_dir={tmp_path}", f"paths.log_dir={tmp_path / 'logs'}",
                f"data.root={tiny_synthetic}", "data.synthetic.size=96", "data.tiles.size=64",
                "data.tiles.overlap=16"]
    done = run_command("prepare", *env_args)
    assert done.returncode == 0, done.stderr
    tiles = pd.read_parquet(tmp_path / "prepared" / "synthetic_planet" / "tiles.parquet")
    assert tiles["region"].nunique() == 3 and tiles["place"].nunique() == 6
    assert tiles["date"].nunique() >= 3 and (tiles["positive_fraction"] > 0).any()
    settings = json.loads((tmp_path / "prepared" / "synthetic_planet" / "prepare.json").read_text())
    assert settings["bands"] == BANDS
    bad = run_command("prepare", *env_args,
                          "data.bands=[blue,B12]", "data.name=bad")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "band B12 not found" in bad.stderr and "Traceback" not in bad.stderr


def test_tile_dataset_patches_and_band_selection(tmp_path):
    prepare_dataset(make_data(tmp_path), tmp_path / "out")
    dataset = TileDataset(tmp_path / "out", crop_size=64, bands=["B8", "B4"])
    sample = dataset[0]
    assert sample["image"].shape == (2, 64, 64) and sample["mask"].shape == (64, 64)
    assert dataset.stats.bands == ("nir", "red")
    with pytest.raises(InputError, match="band B11 not in the prepared dataset"):
        TileDataset(tmp_path / "out", bands=["B11"])
    assert np.isfinite(sample["image"].numpy()).all()


def test_temporal_positive_is_the_same_window_on_another_date(tmp_path):
    prepare_dataset(make_data(tmp_path), tmp_path / "out")
    dataset = TileDataset(tmp_path / "out", temporal_positives=True)
    tiles = dataset.store.tiles
    for tile, partners in dataset.partners.items():
        same = tiles.loc[partners, ["row", "col", "location_id"]]
        assert (same["row"] == tiles.loc[tile, "row"]).all()
        assert (same["location_id"] == tiles.loc[tile, "location_id"]).all()
        assert (tiles.loc[partners, "date"] != tiles.loc[tile, "date"]).all()
    batch = dataset.__getitems__([0, 1])
    assert batch.batched["positive"].shape == batch.batched["image"].shape


def test_grid_crops_cover_each_tile_exactly(tmp_path):
    prepare_dataset(make_data(tmp_path), tmp_path / "out")
    dataset = TileDataset(tmp_path / "out", indices=[3, 5], crop_size=64, grid=True)
    assert len(dataset) == 2 * 4  # 128 px tiles, 2 x 2 crops each
    batch = dataset.__getitems__(list(range(4))).batched
    image, _ = dataset.store.read(3)
    whole = torch.from_numpy(image.astype("float32"))
    top = torch.cat([batch["image"][0], batch["image"][1]], dim=2)
    expected = dataset.stats.normalize(whole[:, :64, :])
    torch.testing.assert_close(top, expected)


@pytest.mark.parametrize("crop", [128, 48])  # whole tiles; crops 0, 40, 80 of each tile
def test_evaluation_windows_count_each_scene_pixel_once(tmp_path, crop):
    prepare_dataset(make_data(tmp_path), tmp_path / "out")
    tiles = TileStore(tmp_path / "out").tiles
    scene = tiles.index[tiles["scene"] == tiles["scene"].iloc[0]].to_numpy()  # 8 tiles
    plain, once = (TileDataset(tmp_path / "out", scene, crop, grid=True, count_once=flag)
                   for flag in (False, True))
    positions = list(range(len(plain)))
    ignored = [data.__getitems__(positions).batched["ignore"].numpy() for data in (plain, once)]
    counted, valid = np.zeros((300, 300), int), np.zeros((300, 300), bool)
    for position, before, after in zip(positions, *ignored, strict=True):
        row, col = tiles.loc[scene[position // len(once.grid)], ["row", "col"]]
        r, c = np.array([row, col]) + once.grid[position % len(once.grid)]
        counted[r:r + crop, c:c + crop] += ~after
        valid[r:r + crop, c:c + crop] |= ~before  # not nodata, inside a kept tile
    assert valid.sum() == 300 * 300 - 100 * 100  # the nodata corner (200:300)^2 stays out
    np.testing.assert_array_equal(counted, valid)  # once each, not up to 4 times
    moved = ignored[1] & ~ignored[0]
    assert 0.05 < moved.mean() < 0.5


def test_slump_crops_hold_a_slump_pixel(tmp_path):
    prepare_dataset(make_data(tmp_path), tmp_path / "out")
    tiles = TileStore(tmp_path / "out").tiles
    with_slump = tiles.index[tiles["positive_fraction"] > 0].to_numpy()
    torch.manual_seed(0)
    plain = TileDataset(tmp_path / "out", indices=with_slump, crop_size=32)
    placed = TileDataset(tmp_path / "out", indices=with_slump, crop_size=32, slump_crops=1.0)
    positions = list(range(len(with_slump))) * 20
    hits = [plain.__getitems__(positions).batched["mask"].flatten(1).any(1).float().mean(),
            placed.__getitems__(positions).batched["mask"].flatten(1).any(1).float().mean()]
    assert hits[0] < 0.5 and hits[1] == 1.0  # a 20 px slump in a 128 px tile


def test_scenes_reached_through_symbolic_links(tmp_path):
    data = make_data(tmp_path / "kept")  # the files live elsewhere
    links = tmp_path / "training_set" / "north"
    links.mkdir(parents=True)
    for scene in sorted((tmp_path / "kept" / "scenes" / "north").glob("*.tif")):
        (links / scene.name).symlink_to(scene)
    linked = {**data, "scenes": str(tmp_path / "training_set")}
    summary = prepare_dataset(linked, tmp_path / "out")
    assert summary.prepared == ["site_2020-07-01", "site_2021-07-01"]  # the links' names
    assert summary.tiles == 16


def test_masks_pair_with_scenes_of_one_site_folder(tmp_path):
    from rts_ssl.inference.evaluate import pair_scenes

    for folder in ("scenes/s002", "masks/s002"):
        (tmp_path / folder).mkdir(parents=True)
    scene = write_geotiff(tmp_path / "scenes" / "s002" / "a.tif", ramp_scene(size=32))
    mask = tmp_path / "masks" / "s002" / "a_mask.tif"
    mask.write_bytes(b"")
    assert pair_scenes([scene], tmp_path / "masks") == [(scene, mask)]
