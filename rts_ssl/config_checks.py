"""Config values checked before any work starts: a value out of range is one line that names
its key, not a traceback (or a silently odd run) minutes later.

Each rule applies to whichever command's config holds the key.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from omegaconf import DictConfig, OmegaConf, open_dict

from rts_ssl.errors import InputError

log = logging.getLogger(__name__)
_ABSENT = object()


def _integer(low: int) -> Callable[[object], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low


def _number(low: float, high: float, low_open: bool = False,
            high_open: bool = False) -> Callable[[object], bool]:
    def test(v: object) -> bool:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            return False
        return (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    return test


def _optional(test: Callable[[object], bool]) -> Callable[[object], bool]:
    return lambda v: v is None or test(v)


def _each(test: Callable[[object], bool]) -> Callable[[object], bool]:
    return lambda v: isinstance(v, (list, tuple)) and len(v) > 0 and all(test(x) for x in v)


INF = float("inf")
FRACTION = _number(0, 1, low_open=True)          # (0, 1]
SHARE = _number(0, 1)                            # [0, 1]
HELD_OUT = _number(0, 1, high_open=True)         # [0, 1)
RULES: dict[str, tuple[Callable[[object], bool], str]] = {
    "batch_size": (_integer(1), "a positive integer"),
    "num_workers": (_integer(0), "an integer >= 0"),
    "samples_per_epoch": (_optional(_integer(1)), "a positive integer or null"),
    "input_size": (_integer(8), "an integer >= 8 (px)"),
    "trainer.max_epochs": (_integer(1), "a positive integer"),
    "split.val_fraction": (HELD_OUT, "a fraction in [0, 1)"),
    "split.test_fraction": (HELD_OUT, "a fraction in [0, 1)"),
    "label_fraction": (_optional(FRACTION), "a fraction in (0, 1] or null"),
    "label_count": (_optional(_integer(1)), "a positive number of tiles or null"),
    "data.tiles.size": (_integer(8), "an integer >= 8 (px)"),
    "data.tiles.overlap": (_integer(0), "an integer >= 0 (px)"),
    "fractions": (_optional(_each(FRACTION)), "a list of fractions in (0, 1] or null"),
    "seeds": (_optional(_each(_integer(0))), "a list of integers >= 0 or null"),
    "balance": (_optional(SHARE), "a share in [0, 1] or null"),
    "slump_crops": (SHARE, "a share in [0, 1]"),
    "iou_threshold": (FRACTION, "an IoU in (0, 1]"),
    "threshold": (_optional(FRACTION), "a probability in (0, 1] or null"),
    "thresholds": (_optional(_each(FRACTION)), "a list of probabilities in (0, 1] or null"),
    "head.lr": (_number(0, INF, low_open=True), "a learning rate > 0"),
    "head.encoder_lr_factor": (_number(0, INF), "a factor >= 0"),
    "head.encoder_frozen_epochs": (_integer(0), "an integer >= 0"),
    "window": (_optional(_integer(8)), "an integer >= 8 (px) or null"),
    "overlap": (_optional(_integer(0)), "an integer >= 0 (px) or null"),
    "min_area_m2": (_number(0, INF), "an area >= 0"),
    "data.resolution_m": (_optional(_number(0, INF, low_open=True)),
                          "a pixel size > 0 (m) or null"),
    "semi.slump_share": (_optional(FRACTION), "a share in (0, 1] or null"),
}
# (smaller key, larger key): the first must stay below the second
BELOW = [("overlap", "window"), ("data.tiles.overlap", "data.tiles.size")]


RENAMED = {"bands": "band_names", "mask": "masks", "checkpoint": "model",  # old -> new
           "data.label_fraction": "label_fraction", "data.label_count": "label_count"}


def apply_renames(cfg: DictConfig) -> None:
    """Old option names still work, with one warning line: their value is taken where the new
    key is not set."""
    for old, new in RENAMED.items():
        value = OmegaConf.select(cfg, old)
        if value is not None and new in cfg:
            log.warning("%s= is deprecated: the same is %s=", old, new)
            with open_dict(cfg):
                if OmegaConf.select(cfg, new) is None:
                    OmegaConf.update(cfg, new, value)
                OmegaConf.update(cfg, old, None)


def check_config(cfg: DictConfig) -> None:
    """Raise :class:`InputError` for the first value out of range."""
    for key, (test, expected) in RULES.items():
        value = _value(cfg, key)
        if value is not _ABSENT and not test(value):
            raise InputError(key, f"{value!r} is not {expected}")
    for small, large in BELOW:
        low, high = _value(cfg, small), _value(cfg, large)
        if _ABSENT not in (low, high) and None not in (low, high) and low >= high:
            raise InputError(small, f"{low} must be smaller than {large} ({high})")
    held_out = [_value(cfg, f"split.{k}_fraction") for k in ("val", "test")]
    if _ABSENT not in held_out and sum(held_out) >= 1:
        raise InputError("split", f"val_fraction + test_fraction = {sum(held_out)} leaves no "
                         "training tiles")


def _value(cfg: DictConfig, key: str):
    value = OmegaConf.select(cfg, key, default=_ABSENT)
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
