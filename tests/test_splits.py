import pandas as pd
import pytest

from rts_ssl.data.splits import assign_splits, grouped_split, leave_one_region_out


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
