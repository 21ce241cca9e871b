"""GeoTIFF scenes: discovery, band selection by name, and windowed reads.

A scene is never read whole: callers ask for windows. Every GDAL failure is turned into an
``InputError`` naming the file, so users never see a traceback from inside GDAL.
"""

from __future__ import annotations

import datetime
import glob
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import RasterioError
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from rts_ssl.data.sensors import band_indexes, get_sensor
from rts_ssl.data.terrain import RADIUS_M, TERRAIN_BANDS, TerrainSource, open_dem
from rts_ssl.errors import InputError

GEOTIFF_SUFFIXES = (".tif", ".tiff")
DATE_IN_TEXT = re.compile(r"(?<!\d)(\d{4})-?(\d{2})-?(\d{2})(?!\d)")


def find_scenes(spec: str | Path | Sequence[str | Path]) -> list[Path]:
    """GeoTIFF files named by a file, a directory (searched recursively), a glob, or a list."""
    if isinstance(spec, str | Path):
        spec = [spec]
    found: list[Path] = []
    for item in spec:
        path = Path(item).expanduser()
        if path.is_dir():
            found += [p for p in sorted(path.rglob("*")) if p.suffix.lower() in GEOTIFF_SUFFIXES]
        elif path.is_file():
            found.append(path)
        else:
            found += [Path(p) for p in sorted(glob.glob(str(path), recursive=True))]
    if not found:
        raise InputError(", ".join(map(str, spec)), "no GeoTIFF scenes found")
    return found


@dataclass(frozen=True)
class BandSelection:
    """Where the requested bands are in one file, and where their names came from."""

    file_bands: tuple[str, ...]
    source: str  # "descriptions", "override" or "sensor"
    indexes: tuple[int, ...]  # 1-based GDAL band indexes, in requested order


def select_bands(
    path: Path,
    descriptions: Sequence[str | None],
    requested: Sequence[str],
    sensor: str | None,
    band_names: Sequence[str] | None,
) -> BandSelection:
    """Resolve requested band names to file band indexes, never silently by position.

    Names come from the GeoTIFF band descriptions; for files without them, from the
    explicit ``band_names`` override, else from the sensor's default band order.
    """
    count = len(descriptions)
    if all(descriptions):
        names, source = tuple(str(d) for d in descriptions), "descriptions"
    elif band_names:
        names, source = tuple(band_names), "override"
    elif sensor:
        names, source = get_sensor(sensor).bands, "sensor"
    else:
        raise InputError(path, "bands have no descriptions; set data.band_names or data.sensor")
    if len(names) != count:
        raise InputError(
            path,
            f"has {count} bands but {len(names)} band names from {source} ({', '.join(names)})",
        )
    found = band_indexes(names, requested)
    missing = [name for name, i in zip(requested, found, strict=True) if i is None]
    if missing:
        hint = ("; terrain bands are derived from a DEM: set dem=<DEM GeoTIFF>"
                if set(missing) & set(TERRAIN_BANDS) else "")
        raise InputError(
            path, f"band {', '.join(missing)} not found (file bands: {', '.join(names)}){hint}"
        )
    return BandSelection(names, source, tuple(i + 1 for i in found))


class Scene:
    """An open GeoTIFF with its requested bands; reads windows as (bands, nodata mask).

    With a ``dem`` (a DEM GeoTIFF, or a directory/glob of them: the one covering the scene
    best, then closest in date, is used), the terrain bands among ``bands`` (slope,
    relative_elevation, hillshade) are derived from it on the scene's grid.
    """

    def __init__(
        self,
        path: str | Path,
        bands: Sequence[str],
        sensor: str | None = None,
        band_names: Sequence[str] | None = None,
        dem: str | Path | Sequence[str | Path] | None = None,
        dem_radius_m: float = RADIUS_M,
    ) -> None:
        self.path = Path(path)
        try:
            self._src = rasterio.open(self.path)
        except (RasterioError, OSError) as err:
            raise InputError(self.path, f"not a readable GeoTIFF ({_first_line(err)})") from None
        src = self._src
        if src.crs is None:
            self.close()
            raise InputError(self.path, "has no CRS; assign one (e.g. gdal_edit.py -a_srs)")
        self.bands = tuple(bands)
        self.crs = src.crs
        self.transform = src.transform
        self.width, self.height = src.width, src.height
        self.bounds = src.bounds
        self.tags = src.tags()
        self._derived = [b for b in bands if dem is not None and b in TERRAIN_BANDS]
        self.terrain: TerrainSource | None = None
        try:
            file_bands = [b for b in bands if b not in self._derived]
            if not file_bands:
                raise InputError(self.path, "no band to read from the scene itself "
                                 f"(requested: {', '.join(bands)})")
            self.selection = select_bands(self.path, src.descriptions, file_bands, sensor,
                                          band_names)
            if self._derived:
                self.terrain = TerrainSource(dem_for_scene(dem, self), dem_radius_m)
        except InputError:
            self.close()
            raise

    def read(self, window: Window | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Pixels of the requested bands (nodata set to 0) and a boolean nodata mask."""
        try:
            data = self._src.read(self.selection.indexes, window=window, masked=True)
        except (RasterioError, OSError) as err:
            raise InputError(self.path, f"cannot read pixels ({_first_line(err)})") from None
        nodata = np.ma.getmaskarray(data).any(axis=0)
        values = data.filled(0)
        if self.terrain is not None:
            values = self._with_terrain(values, window)
            nodata |= ~np.isfinite(values).all(axis=0)
        elif values.dtype.kind == "f":
            nodata |= ~np.isfinite(values).all(axis=0)
        if values.dtype.kind == "f":
            values[:, nodata] = 0
        return values, nodata

    def _with_terrain(self, values: np.ndarray, window: Window | None) -> np.ndarray:
        """All requested bands in order (float32): file bands, then terrain on their grid."""
        window = window or Window(0, 0, self.width, self.height)
        height, width = values.shape[1:]
        transform = self._src.window_transform(window)
        layers = self.terrain.read(self._derived, self.crs, transform, (height, width))
        merged = np.empty((len(self.bands), height, width), np.float32)
        file_index = iter(range(len(values)))
        for k, band in enumerate(self.bands):
            merged[k] = (layers[self._derived.index(band)] if band in self._derived
                         else values[next(file_index)])
        return merged

    def acquisition_date(self) -> str | None:
        """Date from GeoTIFF tags (ACQUISITION_DATE or TIFFTAG_DATETIME), else from the name."""
        for text in (self.tags.get("ACQUISITION_DATE"), self.tags.get("TIFFTAG_DATETIME")):
            date = date_in(text)
            if date:
                return date
        return date_in(self.path.name)

    def close(self) -> None:
        self._src.close()
        if getattr(self, "terrain", None) is not None:
            self.terrain.close()

    def __enter__(self) -> Scene:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def scene_options(data: Mapping) -> dict:
    """``Scene`` keyword arguments from a ``data`` config (sensor, band names, DEM)."""
    return {"sensor": data.get("sensor"), "band_names": data.get("band_names"),
            "dem": data.get("dem"), "dem_radius_m": float(data.get("dem_radius_m") or RADIUS_M)}


@contextmanager
def open_scene(path: str | Path, bands: Sequence[str], **kwargs) -> Iterator[Scene]:
    """Context manager around :class:`Scene`."""
    scene = Scene(path, bands, **kwargs)
    try:
        yield scene
    finally:
        scene.close()


def date_in(text: str | None) -> str | None:
    """First plausible YYYY-MM-DD (or YYYYMMDD) date in ``text`` as ISO string."""
    if not text:
        return None
    for match in DATE_IN_TEXT.finditer(text):
        year, month, day = (int(g) for g in match.groups())
        if 1950 < year < 2100 and 1 <= month <= 12 and 1 <= day <= 31:
            return f"{year:04d}-{month:02d}-{day:02d}"
    return None


def dem_for_scene(spec: str | Path | Sequence[str | Path], scene: Scene) -> Path:
    """The DEM covering most of the scene; among equals, the closest in date to it."""
    candidates = find_scenes(spec)
    if len(candidates) == 1:
        return candidates[0]
    date = scene.acquisition_date()
    ranked = []
    for path in candidates:
        with open_dem(path) as src:
            left, bottom, right, top = transform_bounds(src.crs, scene.crs, *src.bounds)
        s = scene.bounds
        overlap = (max(0.0, min(right, s.right) - max(left, s.left))
                   * max(0.0, min(top, s.top) - max(bottom, s.bottom)))
        ranked.append((-round(overlap, 6), _days_between(date, date_in(path.name)), path))
    best = min(ranked)
    if best[0] == 0:
        raise InputError(scene.path, f"no DEM in {spec} overlaps this scene")
    return best[2]


def _days_between(a: str | None, b: str | None) -> float:
    if a is None or b is None:
        return float("inf")
    return abs((datetime.date.fromisoformat(a) - datetime.date.fromisoformat(b)).days)


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
