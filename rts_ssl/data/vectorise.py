"""Binary masks to polygons: 8-connected regions, also strip by strip over large rasters."""

from __future__ import annotations

import numpy as np
import shapely
from rasterio.features import shapes


def mask_objects(mask: np.ndarray, transform=None) -> list[shapely.Polygon]:
    """8-connected regions of a binary mask as polygons: pixel coordinates, or map
    coordinates under ``transform``."""
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    placed = {} if transform is None else {"transform": transform}
    return [shapely.geometry.shape(geom) for geom, value in
            shapes(mask, mask=mask > 0, connectivity=8, **placed) if value]


class StripPolygons:
    """Regions of a raster read in horizontal strips (bounded memory); a region cut by a
    strip border is one polygon again in :meth:`polygons`."""

    def __init__(self) -> None:
        self.parts: list = []
        self.borders: list = []  # the top edge of every strip but the first
        self.strips = 0

    def add(self, mask: np.ndarray, transform) -> None:
        """The next strip's mask, ``transform`` placing its top-left pixel."""
        if self.strips:
            self.borders.append(shapely.LineString([transform * (0, 0),
                                                    transform * (mask.shape[1], 0)]))
        self.strips += 1
        self.parts += mask_objects(mask, transform)

    def polygons(self) -> list:
        if not self.borders or not self.parts:
            return self.parts
        line = shapely.union_all(self.borders)
        touching = [p for p in self.parts if p.distance(line) == 0]
        rest = [p for p in self.parts if p.distance(line) > 0]
        merged = shapely.union_all(touching) if touching else None
        return rest + (list(getattr(merged, "geoms", [merged])) if merged is not None else [])
