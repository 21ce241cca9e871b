"""``python -m rts_ssl bench <data|pretrain|predict|semi|scale>``: benchmarks printing figures and
ratios."""

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from rts_ssl.commands import hydra_main
from rts_ssl.errors import InputError


def run(cfg: DictConfig) -> None:
    workdir = Path(cfg.workdir)
    if cfg.target == "data":
        _data(cfg.data_loading, workdir)
    elif cfg.target == "pretrain":
        _pretrain(cfg, workdir)
    elif cfg.target == "predict":
        _predict(cfg.prediction, workdir / "predict")
    elif cfg.target == "semi":
        _semi(cfg, workdir / "semi")
    elif cfg.target == "scale":
        _scale(cfg.scale, workdir / "scale")
    else:
        raise InputError(f"bench {cfg.target}",
                         "unknown benchmark (available: data, pretrain, predict, semi, scale)")


def _data(cfg: DictConfig, workdir: Path) -> None:
    from rts_ssl.benchmarks import data_loading

    figures = data_loading.run(workdir, size=cfg.size, patch=cfg.patch, batch=cfg.batch,
                               batches=cfg.batches)
    print(f"scene: {cfg.size}x{cfg.size} px, 4 bands uint16, deflate, 256 px blocks")
    print(f"prepare (2 workers, tiles 256/32): {figures['prepare_s']:.1f} s")
    rounds = lambda rates: ", ".join(f"{r:.0f}" for r in rates)  # noqa: E731
    print(f"rts_ssl tiles (memmap, patch {cfg.patch}, batch {cfg.batch}): median "
          f"{figures['ours']:.0f} patches/s (rounds: {rounds(figures['ours_rounds'])})")
    print(f"torchgeo RasterDataset + RandomGeoSampler: median {figures['torchgeo']:.0f} "
          f"patches/s (rounds: {rounds(figures['torchgeo_rounds'])})")
    print(f"ratio: {figures['ratio']:.1f}")


def _pretrain(cfg: DictConfig, workdir: Path) -> None:
    from rts_ssl.benchmarks import pretraining
    from rts_ssl.data.prepare import resolve_source

    data = resolve_source(OmegaConf.to_container(cfg.data, resolve=True))
    bench = cfg.pretraining
    figures = pretraining.run(data, workdir / "pretrain", encoder=bench.encoder,
                              size=bench.input_size, batch=bench.batch, steps=bench.steps,
                              warmup=bench.warmup, vit_steps=bench.vit_steps)
    print(f"data: {cfg.data.name}, input {bench.input_size} px, batch {bench.batch}")
    print(f"simclr-{bench.encoder} full loop (data + views + fwd/bwd + W&B): "
          f"{figures['loop']:.1f} images/s")
    print(f"simclr-{bench.encoder} bare steps on in-memory tensors: {figures['bare']:.1f} images/s")
    print(f"loop / bare: {figures['loop_ratio']:.2f}")
    print(f"vit_small MAE: {figures['mae_vit_small']:.1f} images/s, SimCLR: "
          f"{figures['simclr_vit_small']:.1f} images/s")
    print(f"MAE / SimCLR: {figures['mae_speedup']:.2f}")


def _predict(cfg: DictConfig, workdir: Path) -> None:
    from rts_ssl.benchmarks import prediction

    figures = prediction.run(workdir, sizes=tuple(cfg.sizes), encoder=cfg.encoder,
                             window=cfg.window, overlap=cfg.overlap, batch=cfg.batch,
                             rounds=cfg.rounds)
    speed = figures["speed"]
    print(f"model: U-Net on {cfg.encoder}; window {cfg.window} px, overlap {cfg.overlap} px, "
          f"batch {cfg.batch}; {speed['windows']} windows on the {min(cfg.sizes)} px scene")
    rounds = lambda rates: ", ".join(f"{r / 1e6:.2f}" for r in rates)  # noqa: E731
    print(f"predict end to end: median {speed['end_to_end'] / 1e6:.2f} Mpx/s (window pixels; "
          f"rounds: {rounds(speed['end_to_end_rounds'])})")
    print(f"bare forward on the same windows in memory: median {speed['bare'] / 1e6:.2f} Mpx/s "
          f"(rounds: {rounds(speed['bare_rounds'])})")
    print(f"end-to-end / bare: {speed['ratio']:.2f}")
    for size, mb in figures["memory_mb"].items():
        print(f"peak RSS of predict on {size} x {size} px: {mb:.0f} MB")
    print(f"benchmark time (scenes written beforehand): {figures['seconds']:.0f} s")


def _semi(cfg: DictConfig, workdir: Path) -> None:
    from hydra import compose

    from rts_ssl.benchmarks import semi
    from rts_ssl.data.prepare import resolve_source

    data = resolve_source(OmegaConf.to_container(cfg.data, resolve=True))
    bench = cfg.semi_supervised
    methods = {m: OmegaConf.to_container(compose("finetune", [f"semi={m}"]).semi, resolve=True)
               for m in bench.methods}  # each method's conf/semi/ settings
    figures = semi.run(data, workdir, methods, encoder=bench.encoder, size=bench.input_size,
                       batch=bench.batch, steps=bench.steps, warmup=bench.warmup)
    print(f"data: {cfg.data.name}; U-Net on {bench.encoder}, {bench.input_size} px crops, "
          f"batch {bench.batch}; {bench.steps} timed steps after {bench.warmup}")
    print(f"supervised: {figures['supervised']:.2f} s/step")
    for method in bench.methods:
        print(f"{method}: {figures[method]:.2f} s/step, {figures[f'{method}_ratio']:.2f} x "
              "supervised")


def _scale(cfg: DictConfig, workdir: Path) -> None:
    from rts_ssl.benchmarks import scale

    figures = scale.run(workdir, scenes=cfg.scenes, size=cfg.size, encoder=cfg.encoder,
                        window=cfg.window, overlap=cfg.overlap, batch=cfg.batch)
    print(f"{cfg.scenes} scenes of {cfg.size} x {cfg.size} px; U-Net on {cfg.encoder}, window "
          f"{cfg.window} px; 1 torch thread per scene")
    print(f"local engine: {figures['local']:.3f} scenes/s")
    for workers in (1, 2):
        print(f"ray {workers} worker{'s' if workers > 1 else ''}: "
              f"{figures[f'ray{workers}']:.3f} scenes/s (Ray start-up and worker warm-up "
              f"{figures[f'ray{workers}_startup_s']:.1f} s, not timed)")
    print(f"ray 2 workers / 1 worker: {figures['two_vs_one']:.2f}")
    print(f"ray 1 worker / local: {figures['one_vs_local']:.2f}")


if __name__ == "__main__":
    hydra_main("bench")
