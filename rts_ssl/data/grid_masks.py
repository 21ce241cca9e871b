"""Masks on a scene's grid, read window by window: slump masks of training scenes, reference
slumps for evaluation, areas excluded from predictions (water, infrastructure).

One source is either a mask raster or polygons; both give boolean windows of the scene grid,
so a whole scene is never held in memory. Polygons are in any CRS (reprojected to the scene's)
and rasterised per window (pixel centres inside). A raster's values above ``threshold`` are
inside and its nodata is not covered; masks of training scenes and references must be on the
scene's own grid (resampling a mask moves slump borders), exclusion rasters are resampled
(nearest) onto it, and may cover some scenes only.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window

from rts_ssl.data.labels import rasterize_polygons, read_polygons
from rts_ssl.data.rasters import GridRaster
from rts_ssl.data.scenes import GEOTIFF_SUFFIXES
from rts_ssl.errors import InputError


class GridMask:
    """``read(window)`` -> (inside, covered) booleans of a window of ``scene``'s grid."""

    def __init__(self, scene, raster: str | Path | None = None,
                 polygons: gpd.GeoDataFrame | None = None, threshold: float = 0,
                 pixel_size_m: float | None = None, same_grid: bool = True,
                 what: str = "mask") -> None:
        self.scene, self.threshold = scene, threshold
        self.geoms, self._raster = None, None
        if polygons is not None:
            if polygons.crs is not None and polygons.crs != scene.crs:
                polygons = polygons.to_crs(scene.crs)
            self.geoms = [g for g in polygons.geometry if g is not None and not g.is_empty]
            return
        self.path = Path(raster)
        self._raster = GridRaster(self.path, scene, [1], Resampling.nearest, pixel_size_m,
                                  what=what, must_overlap=same_grid)
        if same_grid and self._raster.file_grid != scene.file_grid:
            grid = self._raster.describe_grid()
            self._raster.close()
            raise InputError(self.path, f"{what} grid ({grid}) differs from the scene "
                             f"{scene.path.name}")

    @classmethod
    def from_file(cls, path: str | Path, scene, layer: str | None = None,
                  layer_option: str = "the layer", **options) -> GridMask:
        """A GeoTIFF mask or a vector file of polygons, told apart by the suffix; ``layer``
        of a multi-layer vector file (the user's ``layer_option`` names it)."""
        path = Path(path)
        if path.suffix.lower() in GEOTIFF_SUFFIXES:
            return cls(scene, raster=path, **options)
        return cls(scene, polygons=read_polygons(path, layer, layer_option=layer_option))

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        shape = (int(window.height), int(window.width))
        if self._raster is None:
            transform = rasterio.windows.transform(window, self.scene.transform)
            return rasterize_polygons(self.geoms, transform, shape) > 0, np.ones(shape, bool)
        values = self._raster.read(window)[0]
        covered = ~np.ma.getmaskarray(values)
        return (values.filled(0) > self.threshold) & covered, covered

    def strip(self, top: int, height: int) -> np.ndarray:
        """Inside pixels of rows ``top`` to ``top + height`` of the scene."""
        return self.read(Window(0, top, self.scene.width, height))[0]

    def close(self) -> None:
        if self._raster is not None:
            self._raster.close()

    def __enter__(self) -> GridMask:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
