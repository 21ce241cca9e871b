"""``python -m rts_ssl compare <curve dir | wandb:entity/project/group> ...``: rank checkpoints."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from rts_ssl import tracking
from rts_ssl.commands import hydra_main
from rts_ssl.errors import InputError
from rts_ssl.evaluation.curves import aggregate, rank_checkpoints


def run(cfg: DictConfig) -> None:
    if not cfg.curves:
        raise InputError("compare", "name one or more curve directories (holding curve.csv) "
                         "or W&B groups (wandb:<entity>/<project>/<group>)")
    frames = [_curve(str(source)).assign(curve=str(source)) for source in cfg.curves]
    curve = pd.concat(frames, ignore_index=True)
    if len(cfg.curves) > 1:
        curve["pretrained"] = curve["pretrained"] + " (" + curve["curve"] + ")"
    table = rank_checkpoints(curve)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def _curve(source: str) -> pd.DataFrame:
    if source.startswith("wandb:"):
        try:
            return aggregate(tracking.finetune_results(source.removeprefix("wandb:")))
        except ValueError as err:
            raise InputError(source, str(err)) from None
    path = Path(source) / "curve.csv" if Path(source).is_dir() else Path(source)
    if not path.is_file():
        raise InputError(source, "no curve.csv here; run `python -m rts_ssl curve` first")
    return pd.read_csv(path)


if __name__ == "__main__":
    hydra_main("compare")
