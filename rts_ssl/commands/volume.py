"""``python -m rts_ssl volume dem_before=<tif> dem_after=<tif> polygons=<gpkg> output=<dir>``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from rts_ssl.commands import hydra_main
from rts_ssl.data.labels import read_polygons
from rts_ssl.errors import InputError
from rts_ssl.files import write_atomic
from rts_ssl.monitoring.figures import render_change_map
from rts_ssl.monitoring.volume import (
    coregister,
    polygon_volumes,
    read_dem_pair,
    registration_dict,
    stable_terrain,
)

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> None:
    for key in ("dem_before", "dem_after", "polygons"):
        if not cfg[key]:
            raise InputError(key, f"missing: name a file with {key}=<path>")
    before, after, grid = read_dem_pair(Path(cfg.dem_before), Path(cfg.dem_after))
    polygons = read_polygons(cfg.polygons, cfg.polygons_layer,
                             layer_option="polygons_layer").to_crs(grid.crs)
    stable = stable_terrain(polygons, grid, cfg.stable_buffer_m)
    change, registration = coregister(before, after, stable, grid,
                                      cfg.coregistration_iterations)
    volumes = polygon_volumes(change, polygons, grid, registration)
    output = Path(cfg.output)
    output.mkdir(parents=True, exist_ok=True)
    write_atomic(output / "volumes.gpkg", lambda tmp: volumes.to_file(tmp, driver="GPKG",
                                                                        layer="volumes"))
    write_atomic(output / "volumes.csv",
                 lambda tmp: volumes.drop(columns="geometry").to_csv(tmp, index=False))
    write_atomic(output / "coregistration.json", lambda tmp: tmp.write_text(
        json.dumps(registration_dict(registration), indent=1)))
    render_change_map(change, grid, volumes, output / "elevation_change.png")
    missing = volumes[volumes["status"] != "ok"]
    for _, row in missing.iterrows():
        log.warning("polygon %s: %s", row.name, row["status"])
    log.info("co-registration: shift %.2f m E, %.2f m N, offset %.2f m; stable NMAD %.2f m "
             "(%d px)", registration.shift_east_m, registration.shift_north_m,
             registration.vertical_offset_m, registration.nmad_m, registration.stable_pixels)
    log.info("%d polygons (%d not fully covered): volume change %.0f m^3 -> %s",
             len(volumes), len(missing), volumes["volume_m3"].sum(), output)


if __name__ == "__main__":
    hydra_main("volume")
