"""Find the encoder a fine-tuning run starts from: a directory, a run, a W&B artifact, or
published torchgeo weights (which become an encoder directory with our bands)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from rts_ssl.data.sensors import band_indexes, canonical_band
from rts_ssl.errors import InputError
from rts_ssl.models.encoders import EncoderSpec, build_encoder
from rts_ssl.models.export import export_encoder, is_exported, read_weights

log = logging.getLogger(__name__)
NONE = ("", "none", "None", "null")
TORCHGEO = "torchgeo:"
FIRST_CONV = "conv1.weight"  # timm ResNets: the layer whose input channels are the bands


def resolve_pretrained(ref: str | None, cache_dir: str | Path,
                       bands: Sequence[str] | None = None, input_size: int = 64) -> Path | None:
    """Encoder directory for ``ref``; None for random initialisation.

    ``ref`` is an encoder directory, a pretraining run directory (holding ``encoder/``),
    ``wandb:<entity>/<project>/<name>:<alias>`` (downloaded into ``cache_dir``; needs W&B
    online access) or ``torchgeo:<weights enum>`` (e.g.
    ``torchgeo:ResNet18_Weights.SENTINEL2_ALL_MOCO``; weights mapped to ``bands`` by name).
    """
    if ref is None or str(ref) in NONE:
        return None
    ref = str(ref)
    if ref.startswith("wandb:"):
        return _download(ref.removeprefix("wandb:"), Path(cache_dir))
    if ref.startswith(TORCHGEO):
        return published_encoder(ref.removeprefix(TORCHGEO), bands or [], Path(cache_dir),
                                 input_size)
    path = Path(ref).expanduser()
    for candidate in (path, path / "encoder"):
        if is_exported(candidate):
            return candidate
    raise InputError(ref, "not an encoder directory, a pretraining run directory, "
                     "wandb:<entity>/<project>/<name>:<alias> or torchgeo:<weights enum>")


def published_encoder(name: str, bands: Sequence[str], cache_dir: Path,
                      input_size: int = 64) -> Path:
    """An encoder directory made from torchgeo weights, its first layer mapped to ``bands``.

    The weights' input channels are picked by band name (Sentinel-2 ``B2, B3, B4, B8`` out
    of 13, equivalents such as ``blue`` allowed); bands the weights never saw (e.g. slope)
    start from zero weights, so the network starts as the published one and learns to use
    them. Made once per (weights, bands) in ``cache_dir/torchgeo``.
    """
    from torchgeo.models import get_weight

    try:
        weights = get_weight(name)
    except ValueError:
        raise InputError(f"{TORCHGEO}{name}", "not a torchgeo weights enum (e.g. "
                         "ResNet18_Weights.SENTINEL2_ALL_MOCO)") from None
    model = str(weights.meta.get("model", ""))
    if not model.startswith("resnet"):
        raise InputError(f"{TORCHGEO}{name}", f"{model} weights are not supported (ResNets)")
    target = cache_dir / "torchgeo" / f"{name}-{'_'.join(bands)}"
    if is_exported(target):
        return target
    try:
        state = weights.get_state_dict(progress=False)
    except Exception as err:  # no network, proxy, HTTP errors, corrupt downloads
        raise InputError(f"{TORCHGEO}{name}", f"cannot load the published weights "
                         f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                         "); they download once from the internet") from None
    spec = EncoderSpec(model, model, len(bands), input_size)
    encoder = build_encoder(spec)
    encoder.load_state_dict(map_input_bands(state, list(weights.meta["bands"]), bands), strict=True)
    metadata = {"bands": list(bands), "normalization": None, "input_size": input_size,
                "ssl": f"torchgeo-{weights.meta.get('ssl_method', 'published')}",
                "data": str(weights.meta.get("dataset", "published")), "source": name}
    return export_encoder(target, encoder, spec, metadata)


def pretrained_weights(source: Path, info: dict,
                       bands: Sequence[str]) -> dict[str, torch.Tensor]:
    """The exported encoder's weights for a network that reads ``bands``.

    The encoder's own bands (by name, in order): as stored. A CNN whose bands are all among
    ``bands`` (an optical encoder fine-tuned on optical + slope): its first layer mapped by
    band name, as for published weights, the bands it never saw starting at zero. Anything
    else is refused: a ViT's patch embedding, or data without a band the encoder needs.
    """
    trained = list(info.get("bands") or [])
    state = read_weights(source)
    if [canonical_band(b) for b in trained] == [canonical_band(b) for b in bands]:
        return state
    if FIRST_CONV in state and None not in band_indexes(bands, trained):
        return map_input_bands(state, trained, bands)
    raise InputError(source, f"encoder was trained on bands {', '.join(trained)} but the data "
                     f"has {', '.join(bands)} (a CNN encoder takes data holding all its bands, "
                     "a ViT exactly its bands)")


def map_input_bands(state: dict[str, torch.Tensor], source_bands: Sequence[str],
                    bands: Sequence[str]) -> dict[str, torch.Tensor]:
    """The state dict with the first layer's input channels picked by band name; bands not
    in ``source_bands`` get zero weights; the classifier is dropped."""
    found = band_indexes(source_bands, bands)
    weight = state[FIRST_CONV]
    if weight.shape[1] != len(source_bands):
        raise InputError(FIRST_CONV, f"has {weight.shape[1]} input channels, the weights "
                         f"name {len(source_bands)} bands")
    mapped = torch.zeros(weight.shape[0], len(bands), *weight.shape[2:], dtype=weight.dtype)
    for k, index in enumerate(found):
        if index is not None:
            mapped[:, k] = weight[:, index]
    new = [b for b, i in zip(bands, found, strict=True) if i is None]
    if new:
        log.info("the encoder was not trained on %s: those input channels start at zero",
                 ", ".join(new))
    return {**{k: v for k, v in state.items() if not k.startswith("fc.")}, FIRST_CONV: mapped}


def _download(name: str, cache_dir: Path) -> Path:
    import wandb

    target = cache_dir / "artifacts" / name.replace("/", "_").replace(":", "_")
    if is_exported(target):
        return target
    try:
        artifact = wandb.Api().artifact(name, type="encoder")
        return Path(artifact.download(root=str(target)))
    except Exception as err:  # network, login and lookup errors all end here
        raise InputError(f"wandb:{name}", f"cannot fetch the W&B artifact ({err}); offline "
                         "runs keep the encoder in <run dir>/encoder: pass that path") from None
