"""Scenes: discovery, band selection by name, and windowed reads.

A scene is a GeoTIFF, or a chip image (JPEG, PNG, TIFF) on a local pixel grid. It is never
read whole: callers ask for windows. Every GDAL failure is turned into an ``InputError``
naming the file, so users never see a traceback from inside GDAL.
"""

from __future__ import annotations

import glob
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import rasterio.transform
import rasterio.windows
from rasterio.coords import BoundingBox
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.transform import from_origin
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from rts_ssl.data.dates import date_in, days_between, tagged_date
from rts_ssl.data.rasters import Auxiliary, GridRaster, first_line, georeference, open_raster
from rts_ssl.data.sensors import BASELINE_OFFSET, band_indexes, canonical_band, get_sensor
from rts_ssl.data.stac import is_item_collection, item_scenes
from rts_ssl.data.terrain import RADIUS_M, TERRAIN_BANDS, TerrainSource, open_dem
from rts_ssl.errors import InputError

GEOTIFF_SUFFIXES = (".tif", ".tiff")
CHIP_SUFFIXES = (".jpg", ".jpeg", ".png")  # taken from a directory that holds no GeoTIFF
# ``offset: detect`` removes the Sentinel-2 BASELINE_OFFSET from a scene whose darkest 1 % of
# pixels sits above DETECT_DN in every band: water and shadow stay below ~300 DN without it.
DETECT, DETECT_DN = "detect", 600.0


def find_scenes(spec: str | Path | Sequence[str | Path]) -> list[Path]:
    """Scenes named by a file, a directory (searched recursively), a glob, or a list.

    A directory gives its GeoTIFFs, or, when it holds none, its JPEG and PNG chip images; a
    STAC ItemCollection file gives one VRT per item (:mod:`rts_ssl.data.stac`).
    """
    if isinstance(spec, str | Path):
        spec = [spec]
    found: list[Path] = []
    for item in spec:
        path = Path(item).expanduser()
        if path.is_dir():
            files = sorted(path.rglob("*"))
            for suffixes in (GEOTIFF_SUFFIXES, CHIP_SUFFIXES):
                chosen = [p for p in files if p.suffix.lower() in suffixes]
                if chosen:
                    found += chosen
                    break
        elif is_item_collection(path):
            found += item_scenes(path)
        elif path.is_file():
            found.append(path)
        else:
            found += [Path(p) for p in sorted(glob.glob(str(path), recursive=True))]
    if not found:
        raise InputError(", ".join(map(str, spec)), "no scenes found (GeoTIFF, or JPEG/PNG "
                         "chips)")
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
        raise InputError(path, "bands have no descriptions: name them with band_names=[...] "
                             "(data.band_names in data configs) or data.sensor")
    if len(names) != count:
        raise InputError(
            path,
            f"has {count} bands but {len(names)} band names from {source} ({', '.join(names)})",
        )
    found = band_indexes(names, requested)
    missing = [name for name, i in zip(requested, found, strict=True) if i is None]
    if missing:
        hint = ("; terrain bands come from a DEM (dem=<DEM GeoTIFF>) or an auxiliary raster "
                "(auxiliary=[{path: ..., bands: [...]}])"
                if set(missing) & set(TERRAIN_BANDS) else "")
        raise InputError(
            path, f"band {', '.join(missing)} not found (file bands: {', '.join(names)}){hint}"
        )
    return BandSelection(names, source, tuple(i + 1 for i in found))


class Scene:
    """An open raster with its requested bands; reads windows as (bands, nodata mask).

    Bands come, by name, from the file itself, from ``auxiliary`` rasters paired with it
    (resampled onto its grid when they differ), or are derived from a ``dem`` (slope,
    relative_elevation, hillshade; a DEM file, or a directory/glob of them: the one covering
    the scene best, then closest in date). Images without georeference get a local grid of
    ``pixel_size_m``. ``offset`` is added to the file's bands: a number or per-band mapping
    (e.g. -1000 for Sentinel-2 of processing baseline 04.00), ``detect`` (the file's
    metadata, else -1000 where the scene's dark pixels carry the offset, see DETECT_DN), or
    None: the file's ``BOA_ADD_OFFSET`` / ``RADIO_ADD_OFFSET`` band metadata, else 0.
    ``nodata`` marks no data in files that declare no nodata value (e.g. 0).
    ``resolution_m`` puts a north-up scene on a grid of that pixel size over the same extent
    (bilinear over valid pixels; masks and auxiliary rasters follow it): sources of other
    resolutions pool in one dataset, and a finer grid gives small slumps more pixels.
    ``file_grid`` is the file's own grid, which raster masks must share.
    """

    def __init__(
        self,
        path: str | Path,
        bands: Sequence[str],
        sensor: str | None = None,
        band_names: Sequence[str] | None = None,
        dem: str | Path | Sequence[str | Path] | None = None,
        dem_radius_m: float = RADIUS_M,
        auxiliary: Sequence[Mapping] | None = None,
        offset: float | str | Mapping | None = None,
        pixel_size_m: float | None = None,
        nodata: float | None = None,
        resolution_m: float | None = None,
    ) -> None:
        self.path = Path(path)
        self._src = open_raster(self.path, "image")
        self._pixels = self._src  # what read() reads: the file, or the file resampled
        self.terrain: TerrainSource | None = None
        self._layers: list[tuple[tuple[str, ...], GridRaster]] = []
        try:
            src = self._src
            self.crs, self.transform = georeference(src, self.path, pixel_size_m)
            self.width, self.height = src.width, src.height
            self.file_grid = (self.crs, self.transform, self.width, self.height)
            if resolution_m:
                self._resample(float(resolution_m), nodata)
            self.bands = tuple(bands)
            self.bounds = BoundingBox(*rasterio.transform.array_bounds(
                self.height, self.width, self.transform))
            self.tags = src.tags()
            self._open_auxiliary(Auxiliary.parse(auxiliary))
            from_layers = {b for names, _ in self._layers for b in names}
            self._derived = [b for b in bands if dem is not None and b in TERRAIN_BANDS
                             and b not in from_layers]
            file_bands = [b for b in bands if b not in self._derived and b not in from_layers]
            if not file_bands:
                raise InputError(self.path, "no band to read from the scene itself "
                                 f"(requested: {', '.join(bands)})")
            self.selection = select_bands(self.path, src.descriptions, file_bands, sensor,
                                          band_names)
            self.nodata_value = nodata if src.nodata is None else None
            self.offsets = _offsets(src, self.selection, offset, self.nodata_value)
            if self._derived:
                self.terrain = TerrainSource(dem_for_scene(dem, self), dem_radius_m)
        except BaseException:
            self.close()
            raise

    def _resample(self, size: float, nodata: float | None) -> None:
        """The file's pixels on a north-up grid of ``size`` m over the file's extent; no-data
        pixels (the file's, else ``nodata``) take no part in the interpolation."""
        file_transform = self.transform
        if file_transform.b or file_transform.d:
            raise InputError(self.path, "resolution_m needs a north-up image; this one's grid "
                             "is rotated (warp it first, e.g. gdalwarp)")
        x_size, y_size = abs(file_transform.a), abs(file_transform.e)
        if math.isclose(x_size, size) and math.isclose(y_size, size):
            return
        self.width = max(1, round(self.width * x_size / size))
        self.height = max(1, round(self.height * y_size / size))
        self.transform = from_origin(file_transform.c, file_transform.f, size, size)
        missing = nodata if self._src.nodata is None else self._src.nodata
        self._pixels = WarpedVRT(self._src, src_crs=self.crs, src_transform=file_transform,
                                 crs=self.crs, transform=self.transform, width=self.width,
                                 height=self.height, resampling=Resampling.bilinear,
                                 src_nodata=missing, nodata=missing)

    def _open_auxiliary(self, auxiliary: list[Auxiliary]) -> None:
        wanted = set(self.bands)
        for aux in auxiliary:
            names = tuple(b for b in aux.bands if b in wanted)
            if not names:
                continue
            path = aux.path_for(self.path)
            if not path.is_file():
                raise InputError(path, f"auxiliary raster for band {', '.join(names)} of "
                                 f"{self.path.name} not found (pattern {aux.pattern})")
            indexes = [aux.bands.index(b) + 1 for b in names]
            self._layers.append((names, GridRaster(path, self, indexes,
                                                   what="auxiliary raster")))

    def read(self, window: Window | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Pixels of the requested bands (nodata set to 0) and a boolean nodata mask."""
        try:
            data = self._pixels.read(self.selection.indexes, window=window, masked=True)
        except (RasterioError, OSError) as err:
            raise InputError(self.path, f"cannot read pixels ({first_line(err)})") from None
        nodata = np.ma.getmaskarray(data).any(axis=0)
        if self.nodata_value is not None:
            nodata |= (data.data == self.nodata_value).any(axis=0)
        values = data.filled(0)
        values[:, nodata] = 0
        if any(self.offsets):
            values = values.astype(np.float32) + np.float32(self.offsets)[:, None, None]
        if self.terrain is not None or self._layers:
            values = self._with_layers(values, window)
        if values.dtype.kind == "f":
            nodata |= ~np.isfinite(values).all(axis=0)
            values[:, nodata] = 0
        return values, nodata

    def _with_layers(self, values: np.ndarray, window: Window | None) -> np.ndarray:
        """All requested bands in order (float32): file, auxiliary and terrain bands."""
        window = window or Window(0, 0, self.width, self.height)
        height, width = values.shape[1:]
        found: dict[str, np.ndarray] = {}
        for names, raster in self._layers:
            layer = raster.read(window).astype(np.float32).filled(np.nan)
            found |= dict(zip(names, layer, strict=True))
        if self.terrain is not None:
            transform = rasterio.windows.transform(window, self.transform)
            layers = self.terrain.read(self._derived, self.crs, transform, (height, width))
            found |= dict(zip(self._derived, layers, strict=True))
        merged = np.empty((len(self.bands), height, width), np.float32)
        file_index = iter(range(len(values)))
        for k, band in enumerate(self.bands):
            merged[k] = found[band] if band in found else values[next(file_index)]
        return merged

    def acquisition_date(self) -> str | None:
        """Date from GeoTIFF tags (ACQUISITION_DATE or TIFFTAG_DATETIME), else from the name."""
        return tagged_date(self.tags, self.path.name)

    def close(self) -> None:
        if self._pixels is not self._src:
            self._pixels.close()
        self._src.close()
        for _, raster in self._layers:
            raster.close()
        if self.terrain is not None:
            self.terrain.close()

    def __enter__(self) -> Scene:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _offsets(src, selection: BandSelection, offset: float | str | Mapping | None,
             nodata: float | None) -> list[float]:
    """Per selected file band, the value added to its pixels (see :class:`Scene`)."""
    names = [selection.file_bands[i - 1] for i in selection.indexes]
    if isinstance(offset, Mapping):
        by_band = {canonical_band(k): float(v) for k, v in offset.items()}
        return [by_band.get(canonical_band(name), 0.0) for name in names]
    if offset is not None and offset != DETECT:
        return [float(offset)] * len(names)
    tagged = [src.tags(i).get("BOA_ADD_OFFSET", src.tags(i).get("RADIO_ADD_OFFSET"))
              for i in selection.indexes]
    if any(value is not None for value in tagged) or offset is None:
        return [float(value or 0) for value in tagged]
    return [BASELINE_OFFSET if _darkest_percentile(src, selection, nodata) >= DETECT_DN
            else 0.0] * len(names)


def _darkest_percentile(src, selection: BandSelection, nodata: float | None) -> float:
    """1st percentile of the darkest band over valid pixels (decimated to ~512 px)."""
    factor = max(1, max(src.width, src.height) // 512)
    shape = (len(selection.indexes), max(1, src.height // factor), max(1, src.width // factor))
    data = src.read(selection.indexes, out_shape=shape, masked=True)
    valid = ~np.ma.getmaskarray(data).any(axis=0)
    values = data.filled(0)[:, valid].astype(np.float64)
    if nodata is not None:
        values = values[:, (values != nodata).all(axis=0)]
    return float(np.percentile(values, 1, axis=1).min()) if values.size else 0.0


def scene_options(data: Mapping) -> dict:
    """``Scene`` keyword arguments from a ``data`` config (everything but the bands)."""
    return {"sensor": data.get("sensor"), "band_names": data.get("band_names"),
            "dem": data.get("dem"), "dem_radius_m": float(data.get("dem_radius_m") or RADIUS_M),
            "auxiliary": data.get("auxiliary"), "offset": data.get("offset"),
            "pixel_size_m": data.get("pixel_size_m"), "nodata": data.get("nodata"),
            "resolution_m": data.get("resolution_m")}


def used_auxiliary(data: Mapping, bands: Sequence[str]) -> list[dict]:
    """The auxiliary rasters of a data config that provide some of ``bands`` (what a model
    records so that prediction pairs scenes with the same rasters)."""
    return [aux.to_dict() for aux in Auxiliary.parse(data.get("auxiliary"))
            if set(aux.bands) & set(bands)]


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
        ranked.append((-round(overlap, 6), days_between(date, date_in(path.name)), path))
    best = min(ranked)
    if best[0] == 0:
        raise InputError(scene.path, f"no DEM in {spec} overlaps this scene")
    return best[2]
