"""``python -m rts_ssl inventory input=<predict output dir | [dirs]> output=<file.parquet>``."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, ListConfig

from rts_ssl.commands import hydra_main
from rts_ssl.errors import InputError
from rts_ssl.inference.inventory import (
    find_predictions,
    merge_same_date,
    read_slumps,
    write_catalog,
    write_inventory,
)

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> None:
    if not cfg.input:
        raise InputError("input", "name the predict output folder(s): input=<dir> or "
                         "input=[<dir>,<dir>]")
    folders = list(cfg.input) if isinstance(cfg.input, ListConfig) else [cfg.input]
    predictions = find_predictions(folders)
    slumps = read_slumps(predictions, cfg.crs)
    inventory = merge_same_date(slumps) if len(slumps) else slumps.assign(scenes=[])
    output = Path(cfg.output)
    files = write_inventory(inventory, output)
    catalog = write_catalog(predictions, output.with_name(f"{output.stem}_stac"))
    print(f"{len(predictions)} scenes, {len(slumps)} polygons -> {len(inventory)} slumps "
          f"({len(slumps) - len(inventory)} merged across overlapping scenes of one date), "
          f"in {cfg.crs}")
    for path in [*files, catalog]:
        print(f"  {path}")


if __name__ == "__main__":
    hydra_main("inventory")
