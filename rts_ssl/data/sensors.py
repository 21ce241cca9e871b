"""Sensors, their band names, and which bands of different sensors are the same thing.

Bands are always selected by name. Names are compared in a canonical form so that
``B02``/``b2``/``B2`` match, and Sentinel-2 ``B2,B3,B4,B8`` are declared equivalent to
PlanetScope ``blue,green,red,nir`` (one encoder can serve both).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

SENTINEL2_BANDS = (
    "B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12",
)  # fmt: skip

# Sentinel-2 processing baseline 04.00 (January 2022) adds 1000 DN to every L1C and L2A band.
BASELINE_OFFSET = -1000.0

# Sentinel-2 name -> the PlanetScope name of the same band (blue, green, red, NIR).
EQUIVALENT_BANDS = {"B2": "blue", "B3": "green", "B4": "red", "B8": "nir"}


@dataclass(frozen=True)
class Sensor:
    """A sensor's default band order (for files without band descriptions) and pixel size."""

    name: str
    bands: tuple[str, ...]
    resolution_m: float | None
    description: str


SENSORS: dict[str, Sensor] = {
    s.name: s
    for s in (
        Sensor("planetscope", ("blue", "green", "red", "nir"), 3.0, "PlanetScope 4-band"),
        Sensor("sentinel2_l1c", SENTINEL2_BANDS, 10.0, "Sentinel-2 L1C top-of-atmosphere"),
        Sensor("sentinel2_l2a", SENTINEL2_BANDS, 10.0, "Sentinel-2 L2A surface reflectance"),
        Sensor(
            "dem",
            ("elevation", "slope", "relative_elevation"),
            None,
            "DEM-derived layers (relative elevation = elevation minus its local mean)",
        ),
    )
}


def get_sensor(name: str) -> Sensor:
    """The registered sensor called ``name``; a clear error lists the known ones."""
    try:
        return SENSORS[name]
    except KeyError:
        raise ValueError(f"unknown sensor {name!r}; known: {', '.join(SENSORS)}") from None


def canonical_band(name: str) -> str:
    """Canonical form of a band name: lower case, no zero padding, S2 aliases mapped."""
    key = name.strip()
    match = re.fullmatch(r"[Bb]0*(\d+)([Aa]?)", key)
    if match:
        key = f"B{match.group(1)}{match.group(2).upper()}"
        key = EQUIVALENT_BANDS.get(key, key)
    return key.lower()


def band_indexes(available: Sequence[str], requested: Sequence[str]) -> list[int | None]:
    """Position of each requested band in ``available`` (None where it is missing)."""
    lookup: dict[str, int] = {}
    for i, name in enumerate(available):
        lookup.setdefault(canonical_band(name), i)
    return [lookup.get(canonical_band(name)) for name in requested]
