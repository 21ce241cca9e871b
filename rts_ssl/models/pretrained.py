"""Find the encoder a fine-tuning run starts from: a directory, a run, or a W&B artifact."""

from __future__ import annotations

from pathlib import Path

from rts_ssl.errors import InputError

NONE = ("", "none", "None", "null")


def resolve_pretrained(ref: str | None, cache_dir: str | Path) -> Path | None:
    """Encoder directory for ``ref``; None for random initialisation.

    ``ref`` is an encoder directory, a pretraining run directory (holding ``encoder/``), or
    ``wandb:<entity>/<project>/<name>:<alias>`` (downloaded into ``cache_dir``; needs
    W&B online access).
    """
    if ref is None or str(ref) in NONE:
        return None
    ref = str(ref)
    if ref.startswith("wandb:"):
        return _download(ref.removeprefix("wandb:"), Path(cache_dir))
    path = Path(ref).expanduser()
    for candidate in (path, path / "encoder"):
        if (candidate / "encoder.yaml").is_file():
            return candidate
    raise InputError(ref, "not an encoder directory, a pretraining run directory or "
                     "wandb:<entity>/<project>/<name>:<alias>")


def _download(name: str, cache_dir: Path) -> Path:
    import wandb

    target = cache_dir / "artifacts" / name.replace("/", "_").replace(":", "_")
    if (target / "encoder.yaml").is_file():
        return target
    try:
        artifact = wandb.Api().artifact(name, type="encoder")
        return Path(artifact.download(root=str(target)))
    except Exception as err:  # network, login and lookup errors all end here
        raise InputError(f"wandb:{name}", f"cannot fetch the W&B artifact ({err}); offline "
                         "runs keep the encoder in <run dir>/encoder: pass that path") from None
