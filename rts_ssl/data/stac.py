"""Scenes from STAC: an ItemCollection file (what a pystac-client search returns) or a search
(``stac.url``, ``collections``, ``bbox``, ``datetime``, ``max_cloud``).

Each item becomes a GDAL VRT that stacks its band assets under our band names (from the
assets' ``eo:bands`` common names, else their keys: ``blue`` or ``B02``), read windowed
through GDAL (``/vsicurl/`` for remote Cloud-Optimised GeoTIFFs), so every command reads it
like a local GeoTIFF. Sentinel-2 processing baseline 04.00 and later adds 1000 DN to L2A and
L1C values: the VRT's bands carry ``BOA_ADD_OFFSET=-1000`` (what :class:`Scene` applies) so
one model sees one radiometry across years. The VRTs are written beside the collection file,
where every worker of a cluster sees them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from xml.sax.saxutils import escape

import pystac
import rasterio

from rts_ssl.data.sensors import BASELINE_OFFSET, canonical_band
from rts_ssl.errors import InputError
from rts_ssl.files import write_atomic

SKIPPED_ROLES = {"visual", "overview", "thumbnail", "metadata"}
HARMONISED = ("earthsearch:boa_offset_applied",)  # item says the offset is already removed


def is_item_collection(path: Path) -> bool:
    """A JSON file holding a STAC ItemCollection (``type: FeatureCollection`` of Items)."""
    if path.suffix.lower() != ".json" or not path.is_file():
        return False
    try:
        head = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(head, dict) and head.get("type") == "FeatureCollection" and any(
        "stac_version" in feature for feature in head.get("features", []))


def scenes_input(input_spec, stac: Mapping, folder: Path):
    """What ``find_scenes`` reads: ``input=`` as given, or the items a ``stac.url`` search
    finds, saved as ``<folder>/stac_search.json``."""
    if not stac.get("url"):
        return input_spec
    if input_spec:
        raise InputError("stac.url", "give the scenes as input= or as a STAC search "
                         "(stac.url=...), not both")
    return search(stac, folder / "stac_search.json")


def search(spec: Mapping, target: Path) -> Path:
    """Run a STAC API search (pystac-client) and save its ItemCollection at ``target``."""
    from pystac_client import Client

    max_cloud = spec.get("max_cloud")
    retries = logging.getLogger("urllib3.connectionpool")  # one line per retry otherwise
    level = retries.level
    retries.setLevel(logging.ERROR)
    try:
        items = Client.open(spec["url"]).search(
            collections=list(spec.get("collections") or []) or None,
            bbox=list(spec["bbox"]) if spec.get("bbox") else None,
            datetime=spec.get("datetime"),
            query={"eo:cloud_cover": {"lt": max_cloud}} if max_cloud is not None else None,
        ).item_collection()
    except Exception as err:  # network and API errors come in many types
        raise InputError(f"stac.url={spec['url']}", f"search failed ({err})") from None
    finally:
        retries.setLevel(level)
    if not len(items):
        raise InputError(f"stac.url={spec['url']}", "the search found no items")
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, lambda tmp: tmp.write_text(json.dumps(items.to_dict())))
    return target


def item_scenes(collection: Path) -> list[Path]:
    """One VRT per item of ``collection``, in ``<collection stem>_scenes/``."""
    try:
        items = pystac.ItemCollection.from_file(str(collection))
    except Exception as err:  # pystac raises several types for malformed files
        raise InputError(collection, f"not a readable STAC ItemCollection ({err})") from None
    folder = collection.with_name(f"{collection.stem}_scenes")
    folder.mkdir(exist_ok=True)
    scenes = []
    for item in items:
        target = folder / f"{item.id}.vrt"
        vrt = item_vrt(item, collection)
        write_atomic(target, lambda tmp, text=vrt: tmp.write_text(text))
        scenes.append(target)
    return scenes


def band_assets(item: pystac.Item) -> list[tuple[str, str, int]]:
    """``(band name, href, band index in the asset)`` of the item's raster band assets:
    single-band assets first; a multi-band asset (PlanetScope analytic) for the rest."""
    single, multi = [], []
    for key, asset in item.assets.items():
        media = asset.media_type or ""
        if SKIPPED_ROLES & set(asset.roles or []) or not (
                "tiff" in media or asset.href.lower().endswith((".tif", ".tiff"))):
            continue
        names = _asset_band_names(key, asset)
        href = asset.get_absolute_href() or asset.href
        (single if len(names) == 1 else multi).extend(
            (name, href, i + 1) for i, name in enumerate(names))
    seen = {canonical_band(name) for name, _, _ in single}
    return single + [band for band in multi if canonical_band(band[0]) not in seen]


def _asset_band_names(key: str, asset: pystac.Asset) -> list[str]:
    bands = asset.extra_fields.get("eo:bands") or asset.extra_fields.get("bands") or []
    names = [band.get("common_name") or band.get("eo:common_name") or band.get("name")
             for band in bands]
    return [name or key for name in names] if names else [key]


def baseline_offset(item: pystac.Item) -> float:
    """DN to add for Sentinel-2 processing baseline >= 04.00 (unless already removed)."""
    baseline = item.properties.get("s2:processing_baseline")
    if not baseline or any(item.properties.get(flag) for flag in HARMONISED):
        return 0.0
    major = float(str(baseline).split(".")[0] or 0)
    return BASELINE_OFFSET if major >= 4 else 0.0


def item_vrt(item: pystac.Item, source: Path) -> str:
    """The VRT XML stacking the item's bands on the grid of its first band asset."""
    bands = band_assets(item)
    if not bands:
        raise InputError(source, f"item {item.id} has no GeoTIFF band assets")
    grids = {}
    for _, href, _ in bands:
        if href not in grids:
            try:
                with rasterio.open(href) as src:
                    grids[href] = (src.width, src.height, src.dtypes[0], src.nodata, src.crs,
                                   src.transform)
            except rasterio.RasterioIOError as err:
                raise InputError(href, f"cannot open asset of item {item.id} ({err})") from None
    width, height, dtype, nodata, crs, transform = grids[bands[0][1]]
    offset = baseline_offset(item)
    date = item.datetime.date().isoformat() if item.datetime else None
    meta = {"ACQUISITION_DATE": date, "SENSOR": item.properties.get("platform"),
            "STAC_ITEM": item.id}
    lines = [f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">',
             f"  <SRS>{escape(crs.to_wkt())}</SRS>",
             f"  <GeoTransform>{', '.join(repr(v) for v in transform.to_gdal())}</GeoTransform>",
             _metadata(meta, "  ")]
    for number, (name, href, index) in enumerate(bands, start=1):
        w, h, band_dtype, band_nodata, _, _ = grids[href]
        path = f"/vsicurl/{href}" if href.startswith(("http://", "https://")) else href
        lines += [f'  <VRTRasterBand dataType="{_gdal_type(band_dtype)}" band="{number}">',
                  f"    <Description>{escape(name)}</Description>",
                  *([f"    <NoDataValue>{band_nodata}</NoDataValue>"]
                    if band_nodata is not None else []),
                  _metadata({"BOA_ADD_OFFSET": offset if offset else None}, "    "),
                  "    <SimpleSource>",
                  f'      <SourceFilename relativeToVRT="0">{escape(path)}</SourceFilename>',
                  f"      <SourceBand>{index}</SourceBand>",
                  f'      <SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>',
                  f'      <DstRect xOff="0" yOff="0" xSize="{width}" ySize="{height}"/>',
                  "    </SimpleSource>",
                  "  </VRTRasterBand>"]
    return "\n".join([*filter(None, lines), "</VRTDataset>", ""])


def _metadata(values: Mapping, indent: str) -> str:
    items = [f'{indent}  <MDI key="{key}">{escape(str(value))}</MDI>'
             for key, value in values.items() if value is not None]
    return "\n".join([f"{indent}<Metadata>", *items, f"{indent}</Metadata>"]) if items else ""


def _gdal_type(dtype: str) -> str:
    return {"uint8": "Byte", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32",
            "int32": "Int32", "float32": "Float32", "float64": "Float64"}[dtype]
