"""Opening rasters of any GDAL format, and reading other rasters on a scene's grid.

Chip images (JPEG, PNG, TIFF) often carry no georeference. Given their pixel size they get a
*local pixel grid*: a metric engineering CRS with the origin at the image's lower-left
corner, so polygons, areas and every downstream step work as on a georeferenced scene.

:class:`GridRaster` reads a raster (auxiliary layers such as DEM derivatives, slump masks)
window by window on a scene's grid: directly when the grids are identical, else reprojected
and resampled on the fly (``WarpedVRT``), so no file is ever loaded whole. :class:`Auxiliary`
pairs each scene with such rasters by a path pattern.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.transform import Affine, from_origin
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from rts_ssl.errors import InputError

LOCAL_CRS = CRS.from_wkt(
    'LOCAL_CS["local pixel grid",UNIT["metre",1,AUTHORITY["EPSG","9001"]],'
    'AXIS["Easting",EAST],AXIS["Northing",NORTH]]')


def open_raster(path: str | Path, what: str = "raster"):
    """An open rasterio dataset; an unreadable file is a one-line error naming it (``what``
    it should have been: a GeoTIFF for .tif files)."""
    if Path(path).suffix.lower() in (".tif", ".tiff") and what in ("raster", "image"):
        what = "GeoTIFF"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except (RasterioError, OSError) as err:
        raise InputError(path, f"not a readable {what} ({first_line(err)})") from None


def georeference(src, path: str | Path, pixel_size_m: float | None) -> tuple[CRS, Affine]:
    """CRS and transform of an open raster; without a CRS, the local grid of ``pixel_size_m``."""
    if src.crs is not None:
        return src.crs, src.transform
    if not pixel_size_m:
        raise InputError(path, "has no georeference (no CRS): set data.pixel_size_m (metres "
                         "per pixel) for chip images, or assign a CRS (gdal_edit.py -a_srs)")
    size = float(pixel_size_m)
    return LOCAL_CRS, from_origin(0.0, src.height * size, size, size)


def is_local(crs: CRS | None) -> bool:
    """Whether ``crs`` is the local pixel grid of an image without georeference."""
    return crs is not None and crs == LOCAL_CRS


class GridRaster:
    """Bands of a raster read as windows of a target grid (``crs``, ``transform``, size).

    Reads go straight to the file when its grid is the target's; otherwise through a
    ``WarpedVRT`` onto the target grid (``resampling``: bilinear for continuous layers,
    nearest for masks). Pixels outside the raster or at its nodata are masked; a raster
    that does not overlap the grid at all is an error unless ``must_overlap`` is false (a
    layer that covers some scenes only, e.g. an exclusion mask).
    """

    def __init__(self, path: str | Path, grid, indexes: Sequence[int] | None = None,
                 resampling: Resampling = Resampling.bilinear,
                 pixel_size_m: float | None = None, what: str = "raster",
                 must_overlap: bool = True) -> None:
        self.path = Path(path)
        self._src = open_raster(self.path, what)
        self._vrt = None
        try:
            crs, transform = georeference(self._src, self.path, pixel_size_m)
            self.file_grid = (crs, transform, self._src.width, self._src.height)
            self.indexes = list(indexes or range(1, self._src.count + 1))
            if max(self.indexes) > self._src.count:
                raise InputError(self.path, f"has {self._src.count} bands, "
                                 f"{max(self.indexes)} needed")
            same = (crs == grid.crs and transform == grid.transform
                    and (self._src.width, self._src.height) == (grid.width, grid.height))
            if not same:
                if must_overlap:
                    _require_overlap(self.path, crs, transform, self._src, grid)
                # without a nodata value, an alpha band marks what the raster covers
                self._vrt = WarpedVRT(self._src, src_crs=crs, src_transform=transform,
                                      crs=grid.crs, transform=grid.transform,
                                      width=grid.width, height=grid.height,
                                      resampling=resampling, nodata=self._src.nodata,
                                      add_alpha=self._src.nodata is None)
        except BaseException:
            self.close()
            raise

    def describe_grid(self) -> str:
        """The file's own grid, for messages: ``<width>x<height>, <pixel size> m``."""
        return f"{self._src.width}x{self._src.height}, {abs(self._src.transform.a):g} m"

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self._src.dtypes[0])

    def read(self, window: Window | None = None) -> np.ma.MaskedArray:
        """``(bands, h, w)`` masked array of a window of the target grid."""
        source = self._vrt if self._vrt is not None else self._src
        try:
            values = source.read(self.indexes, window=window, masked=True)
            if source is self._vrt and self._src.nodata is None:  # the alpha band: coverage
                values.mask = np.ma.getmaskarray(values) | (
                    source.read(source.count, window=window) == 0)
            return values
        except (RasterioError, OSError) as err:
            raise InputError(self.path, f"cannot read pixels ({first_line(err)})") from None

    def close(self) -> None:
        if self._vrt is not None:
            self._vrt.close()
        self._src.close()


def _require_overlap(path: Path, crs: CRS, transform: Affine, src, grid) -> None:
    """A raster that does not overlap the target grid is a one-line error, not a blank band."""
    left, top = transform * (0, 0)
    right, bottom = transform * (src.width, src.height)
    g_left, g_top = grid.transform * (0, 0)
    g_right, g_bottom = grid.transform * (grid.width, grid.height)
    if is_local(crs) != is_local(grid.crs):
        raise InputError(path, "one of this raster and the scene is georeferenced and the "
                         "other is not: they cannot be put on one grid")
    if not is_local(crs):
        left, bottom, right, top = transform_bounds(crs, grid.crs, min(left, right),
                                                    min(top, bottom), max(left, right),
                                                    max(top, bottom))
    overlap_x = min(max(left, right), max(g_left, g_right)) - max(min(left, right),
                                                                   min(g_left, g_right))
    overlap_y = min(max(top, bottom), max(g_top, g_bottom)) - max(min(top, bottom),
                                                                   min(g_top, g_bottom))
    if overlap_x <= 0 or overlap_y <= 0:
        raise InputError(path, "does not overlap the scene it is paired with (off-grid)")


def first_line(err: Exception) -> str:
    """The first line of an error's message; rasterio's "See previous exception for details"
    is replaced by that exception (GDAL's own message, e.g. a truncated tile)."""
    cause = err.__cause__ or err.__context__
    text = str(err).strip()
    if cause is not None and (not text or "previous exception" in text):
        return first_line(cause)
    return text.splitlines()[0] if text else type(err).__name__


class Auxiliary:
    """Other rasters paired with each scene, whose bands are read by name on the scene grid.

    ``path`` is a pattern: ``{stem}`` is the scene's file name without suffix, and a
    relative path is relative to the scene's folder (``../dem/{stem}.tif`` pairs
    ``s2/a.tif`` with ``dem/a.tif``), so a model can record it and find the rasters again.
    """

    def __init__(self, path: str, bands: Sequence[str]) -> None:
        self.pattern, self.bands = str(path), tuple(bands)

    @classmethod
    def parse(cls, specs: Sequence[Mapping] | None) -> list[Auxiliary]:
        """From config entries ``{path: <pattern>, bands: [names]}``."""
        parsed = []
        for spec in specs or []:
            if not isinstance(spec, Mapping) or not spec.get("path") or not spec.get("bands"):
                raise InputError("auxiliary", f"entry {spec!r} needs a path pattern and band "
                                 "names, e.g. {path: ../dem/{stem}.tif, bands: [slope]}")
            parsed.append(cls(spec["path"], spec["bands"]))
        return parsed

    def path_for(self, scene: Path) -> Path:
        path = Path(self.pattern.format(stem=scene.stem)).expanduser()
        return path if path.is_absolute() else scene.parent / path

    def to_dict(self) -> dict:
        return {"path": self.pattern, "bands": list(self.bands)}
