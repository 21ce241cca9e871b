import numpy as np
import pandas as pd
import pytest

from rts_ssl.data.splits import (
    assign_splits,
    grouped_split,
    label_subset,
    leave_one_region_out,
)
from rts_ssl.errors import InputError


def tiles_table() -> pd.DataFrame:
    rows = []
    for region in ("peel", "banks", "yamal"):
        for place in range(4):
            for date in ("2019", "2021", "2023"):
                for tile in range(5):
                    rows.append({"region": region, "place": f"{region}_p{place}", "date": date,
                                 "location_id": f"{region}_p{place}/{tile}"})
    return pd.DataFrame(rows)


def test_grouped_split_keeps_groups_whole_and_hits_fractions():
    tiles = tiles_table()
    split = assign_splits(tiles, val_fraction=0.2, test_fraction=0.2, group="location_id", seed=3)
    assert (tiles.assign(split=split).groupby("location_id")["split"].nunique() == 1).all()
    shares = split.value_counts(normalize=True)
    assert shares["test"] == pytest.approx(0.2, abs=0.02)
    assert shares["val"] == pytest.approx(0.2, abs=0.02)


def test_split_is_reproducible_by_seed():
    tiles = tiles_table()
    a = assign_splits(tiles, seed=1)
    assert a.equals(assign_splits(tiles, seed=1))
    assert not a.equals(assign_splits(tiles, seed=2))


def test_leave_one_region_out_holds_out_exactly_one_region():
    tiles = tiles_table()
    folds = dict(leave_one_region_out(tiles, val_fraction=0.25))
    assert sorted(folds) == ["banks", "peel", "yamal"]
    for region, split in folds.items():
        assert set(tiles.loc[split == "test", "region"]) == {region}
        val_places = set(tiles.loc[split == "val", "place"])
        assert val_places and not val_places & set(tiles.loc[split == "train", "place"])
        assert region not in set(tiles.loc[split != "test", "region"])
    with pytest.raises(ValueError, match="unknown test region"):
        assign_splits(tiles, test_regions=["mars"])


def test_every_split_gets_a_group_when_few_groups():
    groups = pd.Series(["a"] * 10 + ["b"] * 3 + ["c"] * 2)
    split = grouped_split(groups, {"test": 0.05, "val": 0.05})
    assert set(split) == {"train", "val", "test"}


def test_zero_fraction_means_no_group():
    groups = pd.Series(list("aabbccdd"))
    assert set(grouped_split(groups, {"test": 0.0, "val": 0.25})) == {"train", "val"}


def labelled_table(seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    tiles = tiles_table()
    positive_locations = set(rng.choice(tiles["location_id"].unique(), 6, replace=False))
    tiles["positive_fraction"] = tiles["location_id"].isin(positive_locations) * 0.01
    tiles["labelled_fraction"] = 1.0
    return tiles


def test_label_subsets_are_nested_grouped_stratified_and_seeded():
    tiles = labelled_table()
    split = assign_splits(tiles, test_regions=["yamal"], val_fraction=0.2)
    train = tiles[split == "train"]
    previous = set()
    for fraction in (0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0):
        chosen = label_subset(train, fraction=fraction, seed=4)
        rows = set(chosen)
        assert previous <= rows  # nested
        previous = rows
        picked = train.loc[chosen]
        # whole locations: every date of a chosen location is in
        assert (picked.groupby("location_id").size() == 3).all()
        assert (picked["positive_fraction"] > 0).any()  # slumps at every fraction
        assert set(picked.index) <= set(train.index)  # never a val/test tile
        assert chosen.equals(label_subset(train, fraction=fraction, seed=4))
    assert not label_subset(train, fraction=0.25, seed=4).equals(
        label_subset(train, fraction=0.25, seed=5))
    assert len(previous) == len(train)
    assert train.loc[label_subset(train, count=3, seed=4), "location_id"].nunique() == 3


def test_label_subset_arguments():
    tiles = labelled_table()
    with pytest.raises(ValueError, match="exactly one"):
        label_subset(tiles, fraction=0.1, count=2)
    with pytest.raises(ValueError, match="exceeds"):
        label_subset(tiles, count=10_000)
    with pytest.raises(ValueError, match=r"in \(0, 1\]"):
        label_subset(tiles, fraction=0.0)


def test_an_unknown_split_group_is_a_clear_error():
    tiles = pd.DataFrame({"region": ["a", "b"], "place": ["p", "q"]})
    with pytest.raises(ValueError, match="unknown split group 'location'; choose one of place"):
        assign_splits(tiles, group="location")


def test_normalisation_statistics_come_from_the_train_split_only(tmp_path):
    from fakes import prepared_dataset
    from rts_ssl.data.datamodule import TileDataModule
    from rts_ssl.data.normalization import BandStats, compute_band_stats

    root = prepared_dataset(tmp_path)
    data = {"prepared": str(root / "prepared"), "bands": ["blue", "green", "red", "nir"]}
    module = TileDataModule(data, split={"test_regions": ["east"], "val_fraction": 0.25},
                            labels={"fraction": 0.5})
    module.setup()
    store = module.store
    train = store.tiles.index[store.tiles["region"] == "west"]
    train = train[~train.isin(module.datasets["val"].indices)]
    expected = compute_band_stats(store, train)
    everything = BandStats.from_dict(store.info["normalization"])
    for name in ("train", "val", "test"):  # one normalisation for all splits: the train split's
        assert module.datasets[name].stats.mean == pytest.approx(expected.mean)
    assert len(module.datasets["train"]) < len(train)  # the label budget withholds labels only
    assert not np.allclose(expected.mean, everything.mean)  # the test region never counts


def test_under_ddp_each_test_scene_goes_to_one_rank_and_no_window_twice(tmp_path):
    from types import SimpleNamespace

    from fakes import prepared_dataset
    from rts_ssl.data.datamodule import TileDataModule

    root = prepared_dataset(tmp_path, places=6, size=160)
    data = {"prepared": str(root / "prepared"), "bands": ["blue", "green", "red", "nir"]}
    module = TileDataModule(data, split={"test_regions": ["east"], "val_fraction": 0.25},
                            labels={"fraction": 1.0}, eval_crop_size=32)
    module.setup()
    scenes = module.datasets["test"].layout.scenes
    assert len(set(scenes)) == 6  # on 4 ranks: 2, 2, 1 and 1 scenes, so unequal shares
    shares = []
    for rank in range(4):
        module.trainer = SimpleNamespace(world_size=4, global_rank=rank)
        loader = module.test_dataloader()
        assert not loader.drop_last and len(loader.sampler) == len(list(loader.sampler))
        shares.append(list(loader.sampler))
    assert len(shares[0]) == 2 * len(shares[3])  # not padded to equal shares
    assert sorted(sum(shares, [])) == list(range(len(scenes)))  # each window once
    held = [set(scenes[share]) for share in shares]
    assert sum(len(h) for h in held) == 6  # each scene on one rank, whole
    module.trainer = SimpleNamespace(world_size=1, global_rank=0)
    assert list(module.test_dataloader().sampler) == list(range(len(scenes)))


def test_under_ddp_more_processes_than_test_scenes_is_refused_before_training(tmp_path):
    """A process with no test scene would skip the test and leave the others waiting for its
    metrics: refused when the splits are set up, not after training."""
    from types import SimpleNamespace

    from fakes import prepared_dataset
    from rts_ssl.data.datamodule import TileDataModule

    root = prepared_dataset(tmp_path, places=6, size=160)
    data = {"prepared": str(root / "prepared"), "bands": ["blue", "green", "red", "nir"]}

    def module_on(processes: int) -> TileDataModule:
        module = TileDataModule(data, split={"test_regions": ["east"], "val_fraction": 0.25},
                                labels={"fraction": 1.0}, eval_crop_size=32)
        module.trainer = SimpleNamespace(world_size=processes, global_rank=0)
        return module

    module = module_on(6)  # 6 test scenes (the test above): one each
    module.setup("fit")
    assert len(set(module.datasets["test"].layout.scenes)) == 6
    with pytest.raises(InputError) as refused:
        module_on(7).setup("fit")
    assert str(refused.value) == ("trainer.devices: 7 processes but 6 test scenes "
                                  "(split.test_regions=['east']): each process tests whole "
                                  "scenes, so use at most trainer.devices=6")
