"""What each date of a time series let us see (when a scene was taken: ``data/dates.py``).

Each date's prediction is a probability raster on its scene's own grid; polygons in the
monitoring CRS (the first scene's) are transformed onto it when queried, so scenes of
different grids and CRSs need no resampling.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import rasterio
import shapely
from rasterio.features import geometry_mask, geometry_window

from rts_ssl.inference.probability import NODATA, stored_probabilities


class DateRaster:
    """One date's probability raster (and its scene's cloud band, if any), queried by polygon."""

    def __init__(self, date: str, probability: Path, crs, scene: Path,
                 cloud_band: str | None = None) -> None:
        self.date, self.probability, self.crs = date, probability, crs
        self.scene, self.cloud_band = scene, None
        if cloud_band:
            with rasterio.open(scene) as src:
                if cloud_band in src.descriptions:
                    self.cloud_band = src.descriptions.index(cloud_band) + 1

    def measure(self, polygon: shapely.Geometry) -> tuple[float, float]:
        """Share of the polygon's pixels with data and no cloud, and its mean probability
        (over the pixels with data), from one read of the window under it."""
        with rasterio.open(self.probability) as src:
            geometry = gpd.GeoSeries([polygon], crs=self.crs).to_crs(src.crs).iloc[0]
            try:
                window = geometry_window(src, [geometry])
            except rasterio.errors.WindowError:  # outside this scene
                return 0.0, float("nan")
            values = src.read(1, window=window)
            transform = src.window_transform(window)
        inside = ~geometry_mask([geometry], values.shape, transform)
        if not inside.any():  # smaller than a pixel: the pixels it touches
            inside = ~geometry_mask([geometry], values.shape, transform, all_touched=True)
        has_data = values != NODATA
        visible = has_data
        if self.cloud_band is not None:
            with rasterio.open(self.scene) as scene:
                visible = has_data & (scene.read(self.cloud_band, window=window) == 0)
        probabilities = stored_probabilities(values[inside])
        mean = float(probabilities.mean()) if probabilities.size else float("nan")
        return float(visible[inside].mean()) if inside.any() else 0.0, mean
