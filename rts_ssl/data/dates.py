"""When a scene was taken: dates in file names and GeoTIFF metadata, as ISO strings."""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from pathlib import Path

import rasterio

from rts_ssl.errors import InputError

DATE_IN_TEXT = re.compile(r"(?<!\d)(\d{4})-?(\d{2})-?(\d{2})(?!\d)")


def scene_date(path: Path, pattern: str | None = None) -> str:
    """ISO date of a scene: from ``pattern`` (a regex with a ``date`` group) on its file
    name, else its metadata (ACQUISITION_DATE / TIFFTAG_DATETIME), else its file name."""
    if pattern:
        match = re.search(pattern, path.name)
        date = date_in(match.group("date")) if match and "date" in match.groupdict() else None
        if date is None:
            raise InputError(path, f"no date matching date_pattern {pattern!r} in the name")
        return date
    with rasterio.open(path) as src:
        date = tagged_date(src.tags(), path.name)
    if date:
        return date
    raise InputError(path, "no date in its metadata or file name; set date_pattern=<regex "
                     "with a (?P<date>...) group>")


def tagged_date(tags: Mapping, name: str) -> str | None:
    """ISO date from GeoTIFF tags (ACQUISITION_DATE or TIFFTAG_DATETIME), else from ``name``."""
    for text in (tags.get("ACQUISITION_DATE"), tags.get("TIFFTAG_DATETIME"), name):
        date = date_in(text)
        if date:
            return date
    return None


def date_in(text: str | None) -> str | None:
    """First plausible YYYY-MM-DD (or YYYYMMDD) date in ``text`` as ISO string."""
    if not text:
        return None
    for match in DATE_IN_TEXT.finditer(text):
        year, month, day = (int(g) for g in match.groups())
        if 1950 < year < 2100 and 1 <= month <= 12 and 1 <= day <= 31:
            return f"{year:04d}-{month:02d}-{day:02d}"
    return None


def days_between(a: str | None, b: str | None) -> float:
    if a is None or b is None:
        return float("inf")
    return abs((datetime.date.fromisoformat(a) - datetime.date.fromisoformat(b)).days)
