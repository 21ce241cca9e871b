"""Fine-tuned models loaded for prediction: one model directory, or several that agree on
what they read (an ensemble, probabilities averaged)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import nn

from rts_ssl.data.normalization import BandStats
from rts_ssl.data.terrain import RADIUS_M
from rts_ssl.errors import InputError
from rts_ssl.models.export import load_model, weights_id


@dataclass
class Ensemble:
    """Models that agree on how a scene is read (:func:`scene_reading`); each normalises it
    with its own training statistics (folds differ), their thresholds are averaged."""

    models: list[nn.Module]
    bands: list[str]
    stats: list[BandStats]  # one per model
    threshold: float
    input_size: int
    fixed_size: bool  # ViTs only take their training input size
    dem_radius_m: float  # relative_elevation's local-mean radius the models were trained with
    auxiliary: list[dict] = field(default_factory=list)  # rasters paired with each scene
    resolution_m: float | None = None  # the pixel size scenes were resampled to in training
    model_id: str = ""  # content hash of the weights (of each member's, for an ensemble)

    def window_size(self, requested: int | None) -> int:
        """The sliding-window size: ViTs need their input size; CNNs default to 256."""
        if self.fixed_size:
            if requested not in (None, self.input_size):
                raise InputError(f"window={requested}", f"ViT models take {self.input_size} px "
                                 "windows only")
            return self.input_size
        return requested or 256

    @classmethod
    def from_models(cls, loaded: Sequence[tuple[nn.Module, dict]], sources: Sequence) -> Ensemble:
        infos = [info for _, info in loaded]
        first = scene_reading(infos[0])
        for info, source in zip(infos[1:], sources[1:], strict=True):
            for key, value in scene_reading(info).items():
                if value != first[key]:
                    raise InputError(source, f"ensemble models disagree on {key}: {value} "
                                     f"vs {first[key]} ({sources[0]})")
        vits = [(int(info["input_size"]), source)
                for info, source in zip(infos, sources, strict=True)
                if info["architecture"].get("patch_size")]
        for size, source in vits[1:]:
            if size != vits[0][0]:
                raise InputError(source, f"ensemble ViT models take different input sizes: "
                                 f"{size} vs {vits[0][0]} px ({vits[0][1]})")
        threshold = float(np.mean([info["threshold"] for info in infos]))
        input_size = vits[0][0] if vits else int(infos[0]["input_size"])  # windows fit ViTs
        return cls([m for m, _ in loaded], first["bands"],
                   [BandStats.from_dict(info["normalization"]) for info in infos], threshold,
                   input_size, bool(vits), first["dem_radius_m"] or RADIUS_M,
                   first["auxiliary"], first["resolution_m"])


def scene_reading(info: dict) -> dict:
    """How a model reads a scene, from its model.yaml (defaults for keys older models lack):
    one reading serves every member of an ensemble. ``dem_radius_m`` is None unless the model
    derives relative_elevation from a DEM (not from an auxiliary raster)."""
    auxiliary = list(info.get("auxiliary") or [])
    from_files = {band for raster in auxiliary for band in raster.get("bands", [])}
    derived = "relative_elevation" in info["bands"] and "relative_elevation" not in from_files
    return {"bands": list(info["bands"]), "auxiliary": auxiliary,
            "dem_radius_m": float(info.get("dem_radius_m") or RADIUS_M) if derived else None,
            "resolution_m": info.get("resolution_m")}


def load_ensemble(checkpoint, device: str) -> Ensemble:
    """One model directory or a list of them (an ensemble), on ``device``."""
    sources = [checkpoint] if isinstance(checkpoint, str | Path) else list(checkpoint or [])
    if not sources or sources == [None]:
        raise InputError("model", "name a fine-tuned model directory (holding model.yaml)")
    ensemble = Ensemble.from_models([load_model(s) for s in sources], sources)
    ensemble.model_id = "+".join(weights_id(source) for source in sources)
    for model in ensemble.models:
        model.to(device)
    return ensemble
