"""Exported models are directories of safetensors weights + a YAML description.

- an encoder: ``encoder.safetensors`` + ``encoder.yaml`` (architecture, bands,
  normalisation, input/patch size, ssl method, data, W&B run);
- a fine-tuned model: ``model.safetensors`` + ``model.yaml`` (the same plus the mode, the
  decision threshold chosen on validation and the metrics it was selected on).

Loading never unpickles: weights come from safetensors only.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import yaml
from safetensors.torch import load_file, save_file
from torch import nn

from rts_ssl.errors import InputError
from rts_ssl.files import temporary_path
from rts_ssl.models.encoders import EncoderSpec, build_encoder

ENCODER, MODEL = "encoder", "model"
FORMATS = {ENCODER: "rts_ssl.encoder/1", MODEL: "rts_ssl.model/1"}


def description_file(directory: str | Path, kind: str = ENCODER) -> Path:
    """The YAML that describes the encoder or model exported in ``directory``."""
    return Path(directory) / f"{kind}.yaml"


def is_exported(directory: str | Path, kind: str = ENCODER) -> bool:
    """Whether ``directory`` holds an export (exports appear whole: temporary folder +
    rename)."""
    return description_file(directory, kind).is_file()


def _export(directory: str | Path, kind: str, module: nn.Module, spec: EncoderSpec,
            metadata: dict) -> Path:
    """Write ``<kind>.safetensors`` + ``<kind>.yaml`` atomically (temporary dir + rename)."""
    directory = Path(directory)
    tmp = temporary_path(directory)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
        save_file(state, tmp / f"{kind}.safetensors")
        info = {"format": FORMATS[kind], "architecture": spec.to_dict(), **metadata}
        description_file(tmp, kind).write_text(yaml.safe_dump(info, sort_keys=False))
        shutil.rmtree(directory, ignore_errors=True)
        os.replace(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def read_info(directory: str | Path, kind: str = ENCODER) -> dict:
    """The YAML description of an exported encoder or model, checked."""
    meta = description_file(directory, kind)
    if not meta.is_file():
        raise InputError(directory, f"not an exported {kind} (no {kind}.yaml)")
    try:
        info = yaml.safe_load(meta.read_text())
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or "unreadable"
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise InputError(meta, f"not valid YAML ({problem}{where})") from None
    if not isinstance(info, dict) or info.get("format") != FORMATS[kind]:
        found = info.get("format") if isinstance(info, dict) else None
        raise InputError(meta, f"unknown {kind} format {found!r}")
    return info


def read_weights(directory: str | Path, kind: str = ENCODER) -> dict:
    """The safetensors state dict of an exported encoder or model."""
    weights = Path(directory) / f"{kind}.safetensors"
    try:
        return load_file(weights)
    except Exception as err:  # safetensors raises several error types
        raise InputError(weights, f"cannot read weights ({err})") from None


def weights_id(directory: str | Path, kind: str = MODEL) -> str:
    """A short content hash of the weights: the same id for the same model wherever it is
    copied (maps and inventories name the model that drew them by it)."""
    digest = hashlib.sha256()
    with open(Path(directory) / f"{kind}.safetensors", "rb") as weights:
        for block in iter(lambda: weights.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


def export_encoder(directory: str | Path, encoder: nn.Module, spec: EncoderSpec,
                   metadata: dict) -> Path:
    return _export(directory, ENCODER, encoder, spec, metadata)


def export_model(directory: str | Path, model: nn.Module, spec: EncoderSpec,
                 metadata: dict) -> Path:
    return _export(directory, MODEL, model, spec, metadata)


def read_encoder_info(directory: str | Path) -> dict:
    return read_info(directory, ENCODER)


def load_encoder(directory: str | Path) -> tuple[nn.Module, dict]:
    """A ready encoder module (eval mode) and its metadata (bands, normalisation, ...)."""
    info = read_info(directory, ENCODER)
    spec = EncoderSpec.from_dict(info["architecture"])
    encoder = build_encoder(spec)
    missing, unexpected = encoder.load_state_dict(read_weights(directory), strict=False)
    if missing or unexpected:
        raise InputError(Path(directory) / "encoder.safetensors",
                         f"weights do not fit {spec.name} (missing {len(missing)}, "
                         f"unexpected {len(unexpected)} tensors)")
    return encoder.eval(), info


def load_model(directory: str | Path) -> tuple[nn.Module, dict]:
    """A fine-tuned segmentation network (eval mode) and its ``model.yaml``."""
    from rts_ssl.models.segmentation import build_segmentation

    info = read_info(directory, MODEL)
    net = build_segmentation(EncoderSpec.from_dict(info["architecture"]), info["mode"],
                             info.get("decoder_channels"))
    missing, unexpected = net.load_state_dict(read_weights(directory, MODEL), strict=False)
    if missing or unexpected:
        raise InputError(Path(directory) / "model.safetensors",
                         f"weights do not fit the network (missing {len(missing)}, "
                         f"unexpected {len(unexpected)} tensors)")
    return net.eval(), info
