"""COCO instance polygons of chip images, as slump polygons on the chips' local pixel grid.

COCO coordinates are pixels from the image's top-left corner; a chip without georeference
gets the local grid of :func:`rts_ssl.data.rasters.georeference` (origin at the lower-left
corner, ``pixel_size_m`` metres per pixel), so ``(x, y)`` becomes
``(x * size, (height - y) * size)`` and the polygons rasterise onto the chip exactly.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import geopandas as gpd
import shapely

from rts_ssl.data.rasters import LOCAL_CRS
from rts_ssl.errors import InputError

log = logging.getLogger(__name__)


def load_coco(path: str | Path) -> dict | None:
    """The parsed file when ``path`` is a COCO annotation file, else None (e.g. GeoJSON)."""
    path = Path(path)
    if path.suffix.lower() != ".json":
        return None
    try:
        content = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(path, f"not a readable JSON file ({err})") from None
    if isinstance(content, dict) and "images" in content and "annotations" in content:
        return content
    return None


def coco_polygons(content: dict, path: str | Path, pixel_size_m: float | None
                  ) -> gpd.GeoDataFrame:
    """One row per polygon ring of each instance: ``image_id`` (file stem), ``category``."""
    if not pixel_size_m:
        raise InputError(path, "COCO polygons are in pixels: set data.pixel_size_m (metres "
                         "per pixel of the chips)")
    size = float(pixel_size_m)
    try:
        images = {image["id"]: (Path(image["file_name"]).stem, float(image["height"]))
                  for image in content["images"]}
        categories = {c["id"]: c["name"] for c in content.get("categories", [])}
        rows, skipped = [], 0
        for annotation in content["annotations"]:
            stem, height = images[annotation["image_id"]]
            segmentation = annotation.get("segmentation")
            if not isinstance(segmentation, list):  # run-length encoded (iscrowd) masks
                skipped += 1
                continue
            for ring in segmentation:
                points = [(x * size, (height - y) * size) for x, y in zip(ring[::2], ring[1::2],
                                                                          strict=True)]
                if len(points) >= 3:
                    rows.append({"image_id": stem, "geometry": shapely.Polygon(points),
                                 "category": categories.get(annotation.get("category_id"))})
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(path, f"not a valid COCO annotation file ({type(err).__name__}: "
                         f"{err})") from None
    if skipped:
        log.warning("%s: %d run-length-encoded annotations skipped (polygons only)", path,
                    skipped)
    return gpd.GeoDataFrame(rows, columns=["image_id", "category", "geometry"],
                            geometry="geometry", crs=LOCAL_CRS)
