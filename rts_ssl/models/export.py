"""Exported encoders: ``encoder.safetensors`` + ``encoder.yaml``; loading never unpickles."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import yaml
from safetensors.torch import load_file, save_file
from torch import nn

from rts_ssl.errors import InputError
from rts_ssl.models.encoders import EncoderSpec, build_encoder

FORMAT = "rts_ssl.encoder/1"


def export_encoder(directory: str | Path, encoder: nn.Module, spec: EncoderSpec,
                   metadata: dict) -> Path:
    """Write the encoder directory atomically (temporary sibling, then rename)."""
    directory = Path(directory)
    tmp = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    save_file(state, tmp / "encoder.safetensors")
    info = {"format": FORMAT, "architecture": spec.to_dict(), **metadata}
    (tmp / "encoder.yaml").write_text(yaml.safe_dump(info, sort_keys=False))
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(tmp, directory)
    return directory


def read_encoder_info(directory: str | Path) -> dict:
    """The ``encoder.yaml`` of an exported encoder, checked."""
    meta = Path(directory) / "encoder.yaml"
    if not meta.is_file():
        raise InputError(directory, "not an exported encoder (no encoder.yaml)")
    info = yaml.safe_load(meta.read_text())
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise InputError(meta, f"unknown encoder format {info.get('format') if info else None!r}")
    return info


def load_encoder(directory: str | Path) -> tuple[nn.Module, dict]:
    """A ready encoder module (eval mode) and its metadata (bands, normalisation, ...)."""
    info = read_encoder_info(directory)
    spec = EncoderSpec(**info["architecture"])
    encoder = build_encoder(spec)
    weights = Path(directory) / "encoder.safetensors"
    try:
        state = load_file(weights)
    except Exception as err:  # safetensors raises several error types
        raise InputError(weights, f"cannot read weights ({err})") from None
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise InputError(weights, f"weights do not fit {spec.name} (missing {len(missing)}, "
                         f"unexpected {len(unexpected)} tensors)")
    return encoder.eval(), info


def require_bands(info: dict, bands: list[str], source: str | Path) -> None:
    """Refuse an encoder trained on other bands than the data offers (names, in order)."""
    from rts_ssl.data.sensors import canonical_band

    trained = list(info.get("bands") or [])
    if [canonical_band(b) for b in trained] != [canonical_band(b) for b in bands]:
        raise InputError(source, f"encoder was trained on bands {', '.join(trained)} but the "
                         f"data has {', '.join(bands)}")
