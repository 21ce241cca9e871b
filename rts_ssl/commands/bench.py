"""``python -m rts_ssl bench data``: benchmarks that print measured figures and ratios."""

from pathlib import Path

from omegaconf import DictConfig

from rts_ssl.errors import InputError


def run(cfg: DictConfig) -> None:
    if cfg.target != "data":
        raise InputError(f"bench {cfg.target}", "unknown benchmark (available: data)")
    from rts_ssl.benchmarks import data_loading

    figures = data_loading.run(Path(cfg.workdir), size=cfg.size, patch=cfg.patch,
                               batch=cfg.batch, batches=cfg.batches)
    print(f"scene: {cfg.size}x{cfg.size} px, 4 bands uint16, deflate, 256 px blocks")
    print(f"prepare (2 workers): {figures['prepare_s']:.1f} s")
    print(f"rts_ssl tiles (memmap, patch {cfg.patch}, batch {cfg.batch}): "
          f"{figures['ours']:.0f} patches/s")
    print(f"torchgeo RasterDataset + RandomGeoSampler: {figures['torchgeo']:.0f} patches/s")
    print(f"ratio: {figures['ratio']:.1f}")
