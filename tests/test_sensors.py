from rts_ssl.data.sensors import SENSORS, band_indexes, canonical_band, get_sensor


def test_sentinel2_bands_are_planetscope_equivalents():
    assert [canonical_band(b) for b in ("B2", "B03", "b4", "B08")] == [
        "blue", "green", "red", "nir"]
    assert canonical_band("B8A") == "b8a"  # the narrow NIR band is not "nir"


def test_band_indexes_by_name_in_any_order():
    assert band_indexes(("B4", "B3", "B2", "B8", "B11"), ["B2", "B3", "B4", "B8"]) == [2, 1, 0, 3]
    assert band_indexes(("blue", "green", "red", "nir"), ["B8", "B2"]) == [3, 0]
    assert band_indexes(("blue", "green"), ["B11"]) == [None]


def test_registry():
    assert get_sensor("planetscope").bands == ("blue", "green", "red", "nir")
    assert len(SENSORS["sentinel2_l2a"].bands) == 13 and "B8A" in SENSORS["sentinel2_l1c"].bands
    assert SENSORS["dem"].bands == ("elevation", "slope", "relative_elevation")
