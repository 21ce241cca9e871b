"""The commands of ``python -m rts_ssl``: each module has ``run(cfg)``; this package composes
a command's config and runs it the way the command line does, so tests and notebooks can call
a command in-process (``execute(name, compose(name, overrides))``)."""

from __future__ import annotations

import errno
import importlib
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig, open_dict
from omegaconf.errors import OmegaConfBaseException

from rts_ssl.config_checks import apply_renames, check_config
from rts_ssl.errors import INPUT_ERROR_EXIT, PARTIAL_FAILURE_EXIT, InputError, PartialFailure
from rts_ssl.files import LOCK, exclusive

log = logging.getLogger(__name__)
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
FILESYSTEM_ERRORS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}
COMMANDS = {
    "prepare": "tile GeoTIFF scenes (+ slump polygons) into a training set",
    "pretrain": "self-supervised pretraining (SimCLR, MAE) of an encoder; -m sweeps",
    "finetune": "segmentation head on a pretrained (or random) encoder with few labels; -m "
                "sweeps a curve's cells",
    "curve": "a label-efficiency curve from a finetune sweep's cells -> curve.csv/png",
    "compare": "rank checkpoints of one or more curves (area under curve, IoU at 1/10/100 %)",
    "predict": "any-size scenes -> probability COG, slump polygons, quicklook",
    "inventory": "every scene's predicted slumps in one GeoParquet + STAC catalogue of the maps",
    "evaluate": "pixel and object metrics of predictions vs reference masks or polygons",
    "monitor": "predict one area on many dates, link slumps, growth rates + time series",
    "volume": "volume change per slump from a DEM pair (co-registered, with uncertainty)",
    "quicklook": "render a scene with its slump polygons to PNG",
    "bench": "benchmarks: `bench data` (vs torchgeo), `bench pretrain|predict|semi|scale`",
}


def overrides_of(command: str, arguments: list[str]) -> list[str]:
    """Hydra overrides from a command's arguments: ``bench <target>`` and ``compare <dirs>``
    take positional values; a value holding ``=`` is quoted (:func:`quote_value`)."""
    overrides = [quote_value(a) for a in arguments]
    if command == "bench" and overrides and "=" not in overrides[0] and overrides[0][0] != "-":
        overrides[0] = f"target={overrides[0]}"
    if command == "compare":
        paths = [a for a in overrides if a.startswith("wandb:") or ("=" not in a and a[0] != "-")]
        overrides = [a for a in overrides if a not in paths]
        if paths:
            overrides.append("curves=[" + ",".join(f"'{p}'" for p in paths) + "]")
    return overrides


def quote_value(argument: str) -> str:
    """``key=value`` with ``value`` in quotes when it holds ``=``, as the directories of a
    curve's cells do (``.../entry=random-resnet18,seed=0/model``): Hydra's grammar allows no
    unquoted ``=`` in a value, so such a value can only be a string."""
    key, sep, value = argument.partition("=")
    if sep and "=" in value and value[:1] not in ("'", '"', "[", "{") and "'" not in value:
        return f"{key}='{value}'"
    return argument


def compose(command: str, overrides: list[str] = ()) -> DictConfig:
    """The config ``python -m rts_ssl <command> <overrides>`` runs with (one run, no sweep).

    As a Hydra run does, it records the run (``HydraConfig``) and creates its output directory,
    which ``pretrain``, ``finetune`` and ``curve`` write to."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    with initialize_config_dir(str(CONF_DIR), version_base="1.3", job_name=command):
        cfg = hydra_compose(command, overrides=overrides_of(command, list(overrides)),
                            return_hydra_config=True)
    output_dir = Path(cfg.hydra.run.dir).absolute()
    output_dir.mkdir(parents=True, exist_ok=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def in_sweep() -> bool:
    """Whether this run is one job of a Hydra sweep (``-m``, or an experiment's grid)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@contextmanager
def claimed(run_dir: Path, result: Path, overwrite: bool) -> Iterator[bool]:
    """Whether this run does its work in ``run_dir`` (held by it for the block), so sweeps
    resume and several sweeps of one grid share it: not when ``result`` is there and not
    ``overwrite``; not when another run holds the folder, which a sweep skips with a warning
    and a single run reports as an error (whatever runs after it would find no result).
    Under DDP only rank zero holds the folder; the other ranks follow its decision."""
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    if rank_zero_only.rank:
        yield overwrite or not result.exists()
        return
    with exclusive(run_dir / LOCK) as holder:
        if holder and in_sweep():
            log.warning("skipped: %s is being run by process %s (it writes the result)",
                        run_dir, holder)
            yield False
        elif holder:
            raise InputError(run_dir, f"is being run by process {holder}, which writes the "
                             "result: wait for it, or run in another folder")
        elif not overwrite and result.exists():
            log.info("already done: %s (overwrite=true runs it again)", result)
            yield False
        else:
            yield True


def execute(command: str, cfg: DictConfig) -> int:
    """Check and run one command; expected failures become one ``error:`` line on stderr and
    the exit code that tells a script what happened (0 done, 2 bad input, 3 partly done)."""
    run = importlib.import_module(f"rts_ssl.commands.{command}").run
    logging.getLogger("pyogrio").setLevel(logging.WARNING)  # "Created N records" per file
    try:
        return _exit_code(run, cfg)
    except Exception:
        if in_sweep():  # Hydra goes on to the next job and raises the first failure at the end
            log.exception("this job failed; the sweep goes on with its next job")
        raise


def _exit_code(run, cfg: DictConfig) -> int:
    """Run; an expected failure is one ``error:`` line and its exit code, others raise."""
    try:
        apply_renames(cfg)
        check_config(cfg)
        run(cfg)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return INPUT_ERROR_EXIT
    except OmegaConfBaseException as err:  # a config value that cannot be resolved
        key = getattr(err, "full_key", None) or "config"
        print(f"error: {key}: {str(err).splitlines()[0]}", file=sys.stderr)
        return INPUT_ERROR_EXIT
    except PartialFailure as err:
        print(f"error: {err}", file=sys.stderr)
        return PARTIAL_FAILURE_EXIT
    except OSError as err:  # a place this user may not write, a full or read-only disk
        if err.errno not in FILESYSTEM_ERRORS:
            raise
        print(f"error: {err.filename or 'output'}: {err.strerror}", file=sys.stderr)
        return INPUT_ERROR_EXIT
    return 0


def hydra_main(command: str) -> None:
    """Run ``command`` under Hydra with the overrides in ``sys.argv[1:]`` (sweeps, config
    dirs, ``--cfg``); exit with its code. Each command module calls this as ``__main__``."""
    import hydra

    def task(cfg: DictConfig) -> None:
        code = execute(command, cfg)
        if code:
            sys.exit(code)

    hydra.main(config_path=str(CONF_DIR), config_name=command, version_base="1.3")(task)()
