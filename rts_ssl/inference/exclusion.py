"""Areas where predictions are removed (e.g. water): a mask GeoTIFF or polygons, any CRS."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.features import rasterize
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from rts_ssl.data.labels import read_polygons
from rts_ssl.data.scenes import Scene
from rts_ssl.errors import InputError


class Exclusion:
    """``strip(top, height)`` -> boolean rows of the scene grid that are excluded."""

    def __init__(self, source: str | Path, scene: Scene) -> None:
        self.source, self.scene = Path(source), scene
        self.geoms = None
        if self.source.suffix.lower() not in (".tif", ".tiff"):
            frame = read_polygons(self.source).to_crs(scene.crs)
            self.geoms = list(frame.geometry)
            return
        try:
            with rasterio.open(self.source) as src:
                if src.crs is None:
                    raise InputError(self.source, "exclusion mask has no CRS")
        except rasterio.errors.RasterioIOError as err:
            raise InputError(self.source, f"not a readable GeoTIFF ({err})") from None

    def strip(self, top: int, height: int) -> np.ndarray:
        window = Window(0, top, self.scene.width, height)
        transform = rasterio.windows.transform(window, self.scene.transform)
        shape = (height, self.scene.width)
        if self.geoms is not None:
            return (rasterize(self.geoms, shape, transform=transform) > 0 if self.geoms
                    else np.zeros(shape, bool))
        with rasterio.open(self.source) as src, WarpedVRT(
                src, crs=self.scene.crs, transform=self.scene.transform,
                width=self.scene.width, height=self.scene.height,
                resampling=Resampling.nearest) as vrt:
            return vrt.read(1, window=window) > 0
