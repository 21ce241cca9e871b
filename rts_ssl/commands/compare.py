"""``python -m rts_ssl compare <curve dir> [<curve dir> ...]``: rank checkpoints."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from rts_ssl.errors import InputError
from rts_ssl.evaluation.curves import rank_checkpoints


def run(cfg: DictConfig) -> None:
    if not cfg.curves:
        raise InputError("compare", "name one or more curve directories (holding curve.csv)")
    frames = []
    for folder in cfg.curves:
        path = Path(folder) / "curve.csv" if Path(folder).is_dir() else Path(folder)
        if not path.is_file():
            raise InputError(folder, "no curve.csv here; run `python -m rts_ssl curve` first")
        frames.append(pd.read_csv(path).assign(curve=str(folder)))
    curve = pd.concat(frames, ignore_index=True)
    if len(cfg.curves) > 1:
        curve["pretrained"] = curve["pretrained"] + " (" + curve["curve"] + ")"
    table = rank_checkpoints(curve)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
