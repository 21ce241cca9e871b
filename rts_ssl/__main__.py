"""``python -m rts_ssl <command> [hydra overrides]``: dispatch only."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import hydra
from omegaconf.errors import OmegaConfBaseException

from rts_ssl.config_checks import check_config
from rts_ssl.errors import INPUT_ERROR_EXIT, PARTIAL_FAILURE_EXIT, InputError, PartialFailure

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
# Lightning re-launches DDP workers as `python -m rts_ssl.__main__ <overrides>`; the
# command name travels to them in the environment.
COMMAND_ENV = "RTS_SSL_COMMAND"
COMMANDS = {
    "prepare": "tile GeoTIFF scenes (+ slump polygons) into a training set",
    "pretrain": "self-supervised pretraining (SimCLR, MAE) of an encoder; -m sweeps",
    "finetune": "segmentation head on a pretrained (or random) encoder with few labels",
    "curve": "label-efficiency grid (checkpoints x fractions x seeds) -> curve.csv/png",
    "compare": "rank checkpoints of one or more curves (area under curve, IoU at 1/10/100 %)",
    "predict": "any-size scenes -> probability COG, slump polygons, quicklook",
    "evaluate": "pixel and object metrics of predictions vs reference masks or polygons",
    "monitor": "predict one area on many dates, link slumps, growth rates + time series",
    "volume": "volume change per slump from a DEM pair (co-registered, with uncertainty)",
    "quicklook": "render a scene with its slump polygons to PNG",
    "bench": "benchmarks: `bench data` (vs torchgeo), `bench pretrain|predict|semi`",
}
USAGE = "usage: python -m rts_ssl <command> [key=value ...]\n\ncommands:\n" + "\n".join(
    f"  {name:<10} {text}" for name, text in COMMANDS.items()
)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if "LOCAL_RANK" in os.environ and os.environ.get(COMMAND_ENV) and argv[:1] != [
            os.environ[COMMAND_ENV]]:
        argv = [os.environ[COMMAND_ENV], *argv]
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(USAGE)
        return
    command, overrides = argv[0], list(argv[1:])
    if command not in COMMANDS:
        sys.exit(f"error: unknown command {command!r}\n\n{USAGE}")
    if command == "bench" and overrides and "=" not in overrides[0] and overrides[0][0] != "-":
        overrides[0] = f"target={overrides[0]}"
    if command == "compare":  # positional curve directories
        paths = [a for a in overrides if a.startswith("wandb:") or ("=" not in a and a[0] != "-")]
        overrides = [a for a in overrides if a not in paths]
        if paths:
            overrides.append("curves=[" + ",".join(f"'{p}'" for p in paths) + "]")
    run = importlib.import_module(f"rts_ssl.commands.{command}").run

    def task(cfg) -> None:
        try:
            check_config(cfg)
            run(cfg)
        except InputError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(INPUT_ERROR_EXIT)
        except OmegaConfBaseException as err:  # a config value that cannot be resolved
            key = getattr(err, "full_key", None) or "config"
            print(f"error: {key}: {str(err).splitlines()[0]}", file=sys.stderr)
            sys.exit(INPUT_ERROR_EXIT)
        except PartialFailure as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(PARTIAL_FAILURE_EXIT)

    os.environ[COMMAND_ENV] = command
    sys.argv = [f"rts_ssl {command}", *overrides]
    hydra.main(config_path=str(CONF_DIR), config_name=command, version_base="1.3")(task)()


if __name__ == "__main__":
    main()
