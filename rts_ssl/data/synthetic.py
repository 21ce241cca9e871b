"""Synthetic Arctic scenes with thaw slumps: the default data when users bring none.

Real GeoTIFFs (uint16 reflectance x 10000, nodata 0, band descriptions, UTM CRS), a DEM per
scene (float32 metres, ``dem/<region>/<stem>_dem.tif``: slumps are bowls cut into slopes,
deepest at the headwall, deepening as they grow) and a GeoPackage of slump polygons
(EPSG:4326), deterministic by seed, so the whole real I/O path runs. They imitate what makes
the problem hard: slumps are rare amphitheatres (bright headwall, dark wet floor, lobate
debris tongue) with log-normal sizes, growing between dates; look-alikes (bare river banks,
sandy shores, burn scars, old revegetated scars) and haze/clouds sit beside them; three
regions have distinct backgrounds.
"""

from __future__ import annotations

import json
import os
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import shapely
from rasterio.features import rasterize, shapes
from rasterio.transform import from_origin
from shapely import affinity

from rts_ssl.data.sensors import SENSORS, SENTINEL2_BANDS
from rts_ssl.files import exclusive, lock_beside, temporary_path

FLAVOURS = ("planet", "sentinel2")
VERSION = 2  # 2: DEMs
DATES = ("2019-07-21", "2021-07-29", "2023-08-04")
PLACES_PER_REGION = 2
# Slump areas in m^2: log-normal with median 6,000 (10th pct ~1,000, 90th ~48,000).
AREA_MEDIAN, AREA_SIGMA = 6000.0, 1.5

# Reflectance of each cover class (Sentinel-2 bands B1..B12, B8A at its wavelength order).
_S2_SPECTRA = {
    "veg": [.030, .030, .060, .040, .090, .220, .280, .320, .330, .300, .005, .160, .080],
    "tundra": [.060, .070, .100, .120, .150, .190, .210, .220, .230, .210, .004, .240, .170],
    "soil": [.110, .130, .160, .200, .220, .240, .250, .250, .260, .250, .005, .330, .280],
    "wet": [.045, .050, .065, .075, .080, .090, .095, .100, .100, .090, .003, .100, .070],
    "water": [.050, .045, .055, .035, .025, .018, .016, .015, .014, .010, .002, .008, .005],
    "sand": [.140, .160, .200, .240, .260, .270, .280, .280, .290, .280, .006, .360, .300],
    "burn": [.030, .030, .035, .040, .050, .060, .070, .080, .080, .070, .003, .120, .100],
    "cloud": [.500, .500, .500, .520, .530, .540, .550, .560, .560, .500, .200, .400, .300],
}
_S2_ORDER = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")
_PLANET_FROM_S2 = ("B2", "B3", "B4", "B8")  # blue, green, red, nir
_HAZE_WEIGHT = {"B1": 1.3, "B2": 1.2, "B3": 1.0, "B4": 0.85, "B5": 0.8, "B6": 0.75, "B7": 0.7,
                "B8": 0.65, "B8A": 0.6, "B9": 0.5, "B10": 0.2, "B11": 0.3, "B12": 0.2}


@dataclass(frozen=True)
class Region:
    name: str
    epsg: int
    origin: tuple[float, float]
    vegetation: float  # mean vegetated fraction
    relief: float  # metres of terrain variation
    lakes: float  # fraction of the scene under lakes
    river: bool
    coast: bool
    burns: bool


REGIONS = (
    Region("peel", 32608, (452000.0, 7481000.0), 0.75, 60.0, 0.03, True, False, False),
    Region("banks", 32610, (523000.0, 8012000.0), 0.30, 35.0, 0.04, True, False, False),
    Region("yamal", 32642, (431000.0, 7824000.0), 0.60, 12.0, 0.12, False, True, True),
)


@dataclass(frozen=True)
class Flavour:
    bands: tuple[str, ...]
    resolution: float
    size: int


FLAVOUR_SPECS = {
    "planet": Flavour(SENSORS["planetscope"].bands, 3.0, 512),
    "sentinel2": Flavour(SENTINEL2_BANDS, 10.0, 256),
}


def ensure_synthetic(root: str | Path, flavour: str = "planet", seed: int = 0,
                     size: int | None = None) -> Path:
    """Generate the synthetic set into ``root`` on first use; return ``root``.

    A complete set has a ``COMPLETE`` marker with its parameters; a set made with other
    parameters is an error. Generation happens in a temporary sibling renamed at the end;
    runs that need one set at once take turns (the later waits, then finds it complete).
    """
    root = Path(root)
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown synthetic flavour {flavour!r}; known: {', '.join(FLAVOURS)}")
    params = {"version": VERSION, "flavour": flavour, "seed": seed,
              "size": size or FLAVOUR_SPECS[flavour].size}
    with exclusive(lock_beside(root), wait=True):
        marker = root / "COMPLETE"
        if marker.is_file():
            found = json.loads(marker.read_text())
            if found == params:
                return root
            if {**found, "version": VERSION} != params:
                raise ValueError(f"{root}: holds a synthetic set made with other parameters "
                                 f"({marker.read_text().strip()}); use another root")
            shutil.rmtree(root)  # an older version of the same set: a cache, made again
        if root.exists() and any(root.iterdir()):
            raise ValueError(f"{root}: exists, is not empty and is not a synthetic set")
        tmp = temporary_path(root)
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            _generate(tmp, FLAVOUR_SPECS[flavour], seed, params["size"])
            (tmp / "COMPLETE").write_text(json.dumps(params))
            if root.exists():
                root.rmdir()
            os.replace(tmp, root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def lognormal_slump_areas(rng: np.random.Generator, n: int) -> np.ndarray:
    """Slump areas (m^2) distributed like real inventories."""
    return AREA_MEDIAN * np.exp(AREA_SIGMA * rng.standard_normal(n))


def _rng(seed: int, *keys: object) -> np.random.Generator:
    """A generator that depends only on (seed, keys), not on generation order."""
    return np.random.default_rng([seed, *(zlib.crc32(str(k).encode()) for k in keys)])


def _noise(rng: np.random.Generator, size: int, beta: float) -> np.ndarray:
    """Spatially correlated noise with power spectrum 1/f^beta, zero mean, unit std."""
    freq = np.sqrt(np.fft.fftfreq(size)[:, None] ** 2 + np.fft.fftfreq(size)[None, :] ** 2)
    freq[0, 0] = np.inf
    spectrum = np.fft.fft2(rng.standard_normal((size, size))) * freq ** (-beta / 2)
    field = np.fft.ifft2(spectrum).real
    return (field - field.mean()) / (field.std() + 1e-12)


def _dilate(mask: np.ndarray, radius: float) -> np.ndarray:
    """Binary dilation by a disk (FFT convolution, wraps at edges: fine for texture)."""
    size = mask.shape[0]
    yy, xx = np.meshgrid(np.fft.fftfreq(size) * size, np.fft.fftfreq(size) * size,
                         indexing="ij")
    disk = (xx**2 + yy**2 <= radius**2).astype(float)
    conv = np.fft.ifft2(np.fft.fft2(mask.astype(float)) * np.fft.fft2(disk)).real
    return conv > 0.5


def _spectra(bands: tuple[str, ...]) -> dict[str, np.ndarray]:
    names = _PLANET_FROM_S2 if len(bands) == 4 else bands
    order = [_S2_ORDER.index(b) for b in names]
    return {name: np.asarray(values)[order] for name, values in _S2_SPECTRA.items()}


@dataclass
class _Place:
    """What stays the same at one place across dates."""

    elevation: np.ndarray
    vegetation: np.ndarray
    texture: np.ndarray
    water: np.ndarray
    river_bank: np.ndarray
    shore: np.ndarray
    burn: np.ndarray
    slumps: list[dict]
    scars: list[shapely.Polygon]


def _make_place(region: Region, rng: np.random.Generator, size: int, res: float) -> _Place:
    scale = 3.0 / res  # features are sized in metres; fewer pixels at 10 m
    elevation = region.relief * _noise(rng, size, 3.2)
    cols = np.arange(size)[None, :] * np.ones((size, 1))
    rows = cols.T
    lakes = _noise(rng, size, 2.6)
    water = lakes > np.quantile(lakes, 1 - region.lakes)
    river = np.zeros_like(water)
    if region.river:
        centre = size * rng.uniform(0.35, 0.65) + 0.12 * size * np.sin(
            rows[:, 0] / size * rng.uniform(4, 8) + rng.uniform(0, 6)) \
            + 0.04 * size * _noise(rng, size, 3.0)[:, 0]
        width = max(2.0, 6 * scale)
        river = np.abs(cols - centre[:, None]) < width
        elevation -= 25 * np.exp(-((cols - centre[:, None]) / (0.15 * size)) ** 2)
    if region.coast:
        edge = size * 0.22 + 0.06 * size * _noise(rng, size, 2.8)[:, :1]
        water |= cols < edge
        elevation += 0.08 * (cols - size * 0.2) * res / 3
    water |= river
    bank_width, shore_width = max(1.5, 5 * scale), max(1.5, 4 * scale)
    river_bank = _dilate(river, bank_width) & ~water if region.river else np.zeros_like(water)
    shore = (_dilate(water & ~river, shore_width) & ~water
             & (_noise(rng, size, 3.5) > 0.0)) & ~river_bank
    burn = np.zeros_like(water)
    if region.burns:
        blob = _noise(rng, size, 3.5)
        burn = (blob > np.quantile(blob, 0.93)) & ~water & ~shore
    vegetation = np.clip(region.vegetation + 0.18 * _noise(rng, size, 2.2)
                         - 0.004 * elevation, 0.02, 0.98)
    land = ~(water | river_bank | shore | burn)
    slumps = _place_slumps(rng, elevation, land, size, res)
    scars = [_slump_shape(rng, c, 0.0, a, res) for c, _, a in
             _candidates(rng, elevation, land, size, res, int(rng.integers(1, 3)))]
    return _Place(elevation, vegetation, _noise(rng, size, 1.4), water, river_bank, shore,
                  burn, slumps, scars)


def _candidates(rng, elevation, land, size, res, count):
    """(centre, downslope angle, final area) for ``count`` slumps on land, facing downhill."""
    gy, gx = np.gradient(elevation)
    found = []
    for _ in range(count * 20):
        if len(found) == count:
            break
        area = float(np.clip(lognormal_slump_areas(rng, 1)[0], 400, (size * res * 0.3) ** 2))
        radius = np.sqrt(area) / res
        r, c = rng.uniform(radius + 4, size - radius - 4, 2)
        if not land[int(r), int(c)]:
            continue
        if any(np.hypot(r - fr, c - fc) < radius + np.sqrt(fa) / res for (fc, fr), _, fa
               in found):
            continue
        angle = float(np.arctan2(-gy[int(r), int(c)], -gx[int(r), int(c)]))
        found.append(((c, r), angle, area))
    return found


def _place_slumps(rng, elevation, land, size, res) -> list[dict]:
    count = int(rng.integers(3, 9))
    slumps = []
    for k, (centre, angle, area) in enumerate(_candidates(rng, elevation, land, size, res,
                                                          count)):
        slumps.append({"id": k, "centre": centre, "angle": angle, "area": area,
                       "growth": float(rng.uniform(0.05, 0.2)),
                       "first": int(rng.choice(len(DATES), p=[0.7, 0.2, 0.1])),
                       "shape_seed": int(rng.integers(1 << 30))})
    return slumps


def _slump_shape(rng, centre, angle, area, res) -> shapely.Polygon:
    """Amphitheatre (lobed headwall, upslope) + lobate debris tongue (downslope), in pixels.

    Local frame: +v points downslope. The polygon is scaled to ``area`` (m^2) and anchored
    at its downslope toe, so a growing slump extends upslope (headwall retreat).
    """
    t = np.linspace(np.pi, 2 * np.pi, 40)
    lobes = 1 + 0.07 * np.sin(t * rng.integers(3, 7) + rng.uniform(0, 6))
    bowl = np.c_[1.3 * np.cos(t) * lobes, np.sin(t) * lobes]
    length = rng.uniform(0.8, 1.6)
    v = np.linspace(0, length, 20)
    half = (0.75 - 0.35 * v / length) * (1 + 0.08 * np.sin(v * 9 + rng.uniform(0, 6)))
    tongue = np.r_[np.c_[half, v], np.c_[-half[::-1], v[::-1]]]
    shape = shapely.Polygon(bowl).union(shapely.Polygon(tongue).buffer(0.15)).buffer(0)
    if shape.geom_type != "Polygon":
        shape = max(shape.geoms, key=lambda g: g.area)
    pixels = area / res**2
    shape = affinity.scale(shape, np.sqrt(pixels / shape.area), np.sqrt(pixels / shape.area),
                           origin=(0, 0))
    toe = shape.bounds[3]
    shape = affinity.translate(shape, 0, -toe + np.sqrt(pixels) * 0.6)
    shape = affinity.rotate(shape, np.degrees(angle) - 90, origin=(0, 0))
    return affinity.translate(shape, *centre)


def _slump_at(slump: dict, date_index: int, res: float) -> shapely.Polygon | None:
    if date_index < slump["first"]:
        return None
    years = 2 * (len(DATES) - 1 - date_index)
    area = slump["area"] / (1 + slump["growth"]) ** years
    rng = np.random.default_rng(slump["shape_seed"])
    return _slump_shape(rng, slump["centre"], slump["angle"], area, res)


def _render(place: _Place, spectra, bands, rng, date_index, size, res, transform):
    """Reflectance cube (bands, size, size) and the slump polygons (pixel coords) of a date."""
    veg = np.clip(place.vegetation * rng.uniform(0.9, 1.05) + 0.05 * place.texture, 0, 1)
    cube = veg * spectra["veg"][:, None, None] + (1 - veg) * spectra["tundra"][:, None, None]
    cube *= 1 + 0.04 * place.texture
    hill = np.clip(1 + 0.015 * np.gradient(place.elevation, axis=1), 0.85, 1.15)
    cube *= hill
    paint = {"water": place.water, "soil": place.river_bank, "sand": place.shore,
             "burn": place.burn}
    for cover, mask in paint.items():
        cube[:, mask] = 0.8 * spectra[cover][:, None] + 0.2 * cube[:, mask]
    for scar in place.scars:
        inside = _mask(scar, transform, size, res)
        cube[:, inside] = 0.5 * cube[:, inside] + 0.5 * spectra["wet"][:, None]
    polygons = []
    for slump in place.slumps:
        shape = _slump_at(slump, date_index, res)
        if shape is None:
            continue
        polygons.append((slump["id"], shape))
        _paint_slump(cube, shape, slump["angle"], spectra, transform, size, res, rng)
    return cube, polygons


def _elevation(place: _Place, date_index: int, size: int, res: float, transform) -> np.ndarray:
    """Terrain of a date in metres: each active slump a bowl, deepest under the headwall.

    A slump's depth grows with the square root of its area (a deeper cut as the headwall
    retreats into the slope), up to ~2-12 m for the largest.
    """
    elevation = (200.0 + place.elevation).astype(np.float32)
    for slump in place.slumps:
        shape = _slump_at(slump, date_index, res)
        if shape is None:
            continue
        inside = _mask(shape, transform, size, res)
        rows, cols = np.nonzero(inside)
        if not len(rows):
            continue
        position = _downslope_position(shape, slump["angle"], rows, cols)
        depth = min(12.0, 2.0 + np.sqrt(shape.area) * res / 25.0)
        elevation[rows, cols] -= depth * np.sqrt(np.clip(1 - position, 0, 1))
    return elevation


def _downslope_position(shape, angle: float, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """0 at a slump's headwall (its most upslope pixels) to 1 at its toe."""
    along = (cols - shape.centroid.x) * np.cos(angle) + (rows - shape.centroid.y) * np.sin(angle)
    return (along - along.min()) / (along.max() - along.min() + 1e-9)


def _mask(shape_px, transform, size, res) -> np.ndarray:
    world = affinity.affine_transform(shape_px, [res, 0, 0, -res, transform.c, transform.f])
    return rasterize([world], (size, size), transform=transform, dtype=np.uint8) > 0


def _paint_slump(cube, shape, angle, spectra, transform, size, res, rng) -> None:
    inside = _mask(shape, transform, size, res)
    rows, cols = np.nonzero(inside)
    if not len(rows):
        return
    position = _downslope_position(shape, angle, rows, cols)
    floor = spectra["wet"][:, None] * (1 + 0.08 * rng.standard_normal(len(rows)))
    headwall = spectra["soil"][:, None] * 1.15
    debris = 0.5 * (spectra["soil"] + spectra["wet"])[:, None]
    weight_head = np.clip(1 - position / 0.18, 0, 1)
    weight_debris = np.clip((position - 0.55) / 0.3, 0, 1)
    value = (weight_head * headwall + weight_debris * debris
             + (1 - weight_head - weight_debris).clip(0) * floor)
    cube[:, rows, cols] = value


def _atmosphere(cube, bands, spectra, rng, size) -> None:
    if rng.random() < 0.25:
        haze = np.clip(0.5 + 0.5 * _noise(rng, size, 3.5), 0, None) * rng.uniform(0.01, 0.04)
        weights = np.array([_HAZE_WEIGHT[b] for b in (bands if len(bands) > 4
                                                       else _PLANET_FROM_S2)])
        cube += weights[:, None, None] * haze
        cover = _noise(rng, size, 3.2)
        cloud = np.clip((cover - np.quantile(cover, 0.93)) * 3, 0, 1)
        shadow = np.roll(cloud, (int(size * 0.05), int(size * 0.04)), axis=(0, 1))
        cube *= 1 - 0.5 * shadow
        cube[:] = (1 - cloud) * cube + cloud * spectra["cloud"][:, None, None]
    gain = rng.uniform(0.96, 1.04, (len(cube), 1, 1))
    cube[:] = cube * gain + rng.uniform(-0.005, 0.005, (len(cube), 1, 1))
    cube += rng.normal(0, 0.003, cube.shape)


def _nodata(rng, size) -> np.ndarray:
    """A diagonal strip-edge cut on some scenes, like PlanetScope footprints."""
    if rng.random() > 0.3:
        return np.zeros((size, size), bool)
    rows, cols = np.mgrid[:size, :size]
    return rows + cols < size * rng.uniform(0.15, 0.35)


def _generate(out: Path, flavour: Flavour, seed: int, size: int) -> None:
    spectra = _spectra(flavour.bands)
    slump_rows, lookalike_rows = [], []
    for region in REGIONS:
        (out / "scenes" / region.name).mkdir(parents=True)
        for k in range(PLACES_PER_REGION):
            place_id = f"{region.name}_p{k}"
            x0 = region.origin[0] + k * 20000.0
            transform = from_origin(x0, region.origin[1], flavour.resolution,
                                    flavour.resolution)
            place = _make_place(region, _rng(seed, region.name, k, "place"), size,
                                flavour.resolution)
            for d, date in enumerate(DATES):
                rng = _rng(seed, region.name, k, date)
                cube, polygons = _render(place, spectra, flavour.bands, rng, d, size,
                                         flavour.resolution, transform)
                _atmosphere(cube, flavour.bands, spectra, rng, size)
                values = np.clip(cube * 10000, 1, 65535).astype(np.uint16)
                values[:, _nodata(rng, size)] = 0
                stem = f"{place_id}_{date}"
                _write_scene(out / "scenes" / region.name / f"{stem}.tif", values, flavour,
                             region, transform, date)
                _write_dem(out / "dem" / region.name / f"{stem}_dem.tif",
                           _elevation(place, d, size, flavour.resolution, transform),
                           region, transform, date)
                common = {"image_id": stem, "date": date, "region": region.name,
                          "location": place_id}
                res = flavour.resolution
                to_world = [res, 0, 0, -res, transform.c, transform.f]
                for slump_id, shape in polygons:
                    world = affinity.affine_transform(shape, to_world)
                    slump_rows.append({**common, "slump_id": f"{place_id}_s{slump_id}",
                                       "label": "RTS", "area_m2": world.area,
                                       "geometry": world, "epsg": region.epsg})
                for kind, geom in _lookalikes(place, to_world, transform, size):
                    lookalike_rows.append({**common, "kind": kind, "geometry": geom,
                                           "epsg": region.epsg})
    _write_vectors(out / "labels.gpkg", slump_rows, lookalike_rows)


def _lookalikes(place: _Place, to_world, transform, size, min_pixels: int = 30):
    min_area = min_pixels * abs(transform.a * transform.e)
    for kind, mask in (("river_bank", place.river_bank), ("sandy_shore", place.shore),
                       ("burn_scar", place.burn)):
        for geom, _ in shapes(mask.astype(np.uint8), mask=mask, transform=transform):
            polygon = shapely.geometry.shape(geom)
            if polygon.area >= min_area:
                yield kind, polygon
    for scar in place.scars:
        yield "stabilised_scar", affinity.affine_transform(scar, to_world)


def _write_scene(path: Path, values, flavour: Flavour, region: Region, transform, date):
    block = 256 if values.shape[1] >= 256 else 128
    profile = dict(driver="GTiff", width=values.shape[2], height=values.shape[1],
                   count=len(values), dtype="uint16", crs=f"EPSG:{region.epsg}",
                   transform=transform, nodata=0, compress="deflate", tiled=True,
                   blockxsize=block, blockysize=block)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(values)
        dst.descriptions = tuple(flavour.bands)
        dst.update_tags(ACQUISITION_DATE=date)


def _write_dem(path: Path, elevation: np.ndarray, region: Region, transform, date) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(driver="GTiff", width=elevation.shape[1], height=elevation.shape[0],
                   count=1, dtype="float32", crs=f"EPSG:{region.epsg}", transform=transform,
                   nodata=-9999.0, compress="deflate", tiled=True, blockxsize=128,
                   blockysize=128)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(elevation, 1)
        dst.descriptions = ("elevation",)
        dst.update_tags(ACQUISITION_DATE=date)


def _write_vectors(path: Path, slumps: list[dict], lookalikes: list[dict]) -> None:
    for layer, rows in (("slumps", slumps), ("lookalikes", lookalikes)):
        frames = []
        for epsg in sorted({r["epsg"] for r in rows}):
            part = [{k: v for k, v in r.items() if k != "epsg"} for r in rows
                    if r["epsg"] == epsg]
            frames.append(gpd.GeoDataFrame(part, geometry="geometry",
                                           crs=f"EPSG:{epsg}").to_crs("EPSG:4326"))
        frame = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs="EPSG:4326")
        frame.to_file(path, layer=layer, driver="GPKG")
