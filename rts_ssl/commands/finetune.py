"""``python -m rts_ssl finetune pretrained=<encoder|run|wandb:ref|none> label_fraction=F``."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from rts_ssl import tracking
from rts_ssl.commands import claimed, hydra_main
from rts_ssl.data.datamodule import TileDataModule
from rts_ssl.data.scenes import used_auxiliary
from rts_ssl.data.splits import FOLD, fold_key
from rts_ssl.data.terrain import RADIUS_M
from rts_ssl.errors import InputError
from rts_ssl.files import write_atomic
from rts_ssl.models.encoders import EncoderSpec
from rts_ssl.models.export import export_model, load_model, read_info
from rts_ssl.models.finetune import SegmentationTask, SpectralRuleTask
from rts_ssl.models.pretrained import pretrained_weights, resolve_pretrained
from rts_ssl.models.segmentation import load_backbone
from rts_ssl.models.semi import METHODS, SemiSupervisedTask
from rts_ssl.models.spectral_rule import SpectralRule
from rts_ssl.training import build_trainer

log = logging.getLogger(__name__)
RESULT = "result.json"


def run(cfg: DictConfig) -> None:
    """Fine-tune one cell in its run directory, unless it is done or another run holds it
    (:func:`claimed`); ``retest``: a done cell's model is tested again instead."""
    started = time.monotonic()
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    with claimed(run_dir, run_dir / RESULT, cfg.overwrite or cfg.retest) as ours:
        if ours and cfg.retest and not cfg.overwrite and (run_dir / RESULT).exists():
            _retest(cfg, run_dir)
        elif ours:
            _train(cfg, run_dir, started)


def _train(cfg: DictConfig, run_dir: Path, started: float) -> None:
    pl.seed_everything(cfg.seed, workers=True)
    data = OmegaConf.to_container(cfg.data, resolve=True)
    source = resolve_pretrained(cfg.pretrained, cfg.paths.cache_dir, data["bands"],
                                cfg.input_size)
    info = read_info(source) if source else None
    if info:
        weights = pretrained_weights(source, info, data["bands"])
        encoder = {**EncoderSpec.from_dict(info["architecture"]).to_dict(),
                   "in_chans": len(data["bands"])}
        if not encoder.get("patch_size"):  # CNNs take any crop; ViTs keep their input size
            encoder["input_size"] = cfg.input_size
    else:
        encoder = {**OmegaConf.to_container(cfg.encoder), "in_chans": len(data["bands"]),
                   "input_size": cfg.input_size}
    semi, unlabelled = _semi_supervision(cfg, encoder)
    line = curve_line(info, encoder["name"], semi)
    fraction, count = _label_budget(cfg)
    fields = {"pretrained": line, "ssl": info["ssl"] if info else "none",
              "encoder": encoder["name"], "label_fraction": fraction, "label_count": count,
              "seed": cfg.seed, "mode": cfg.mode, "semi": semi["name"] if semi else "none",
              "unlabelled": unlabelled["name"] if unlabelled else None,
              FOLD: fold_key(cfg.split.test_regions)}
    datamodule = _datamodule(cfg, data, encoder, semi, unlabelled)
    options = {"mode": cfg.mode, "iou_threshold": cfg.iou_threshold,
               **OmegaConf.to_container(cfg.head)}
    if source is None:  # a random encoder has nothing to preserve: it learns at the full rate
        options["encoder_lr_factor"] = 1.0
    task = _task(encoder, options, semi)
    trainer_cfg = cfg.trainer
    if isinstance(task, SpectralRuleTask):  # the baseline: thresholds fitted, not learnt
        # counted in seconds, with no gradient for DDP to share: one process, whatever
        # trainer= says (DDP refuses a module without trainable parameters)
        trainer_cfg = OmegaConf.create({**OmegaConf.to_container(cfg.trainer, resolve=True),
                                        "strategy": "auto", "devices": 1, "num_nodes": 1})
    if source:
        load_backbone(task.net, weights, str(source))
    name = tracking.run_name("finetune", line, data["name"],
                             f"n{count}" if count else f"f{fraction}", f"s{cfg.seed}")
    logger = tracking.make_logger(cfg.logger, run_dir, name, group=f"finetune-{line}",
                                  job_type="finetune",
                                  config={**OmegaConf.to_container(cfg, resolve=True), **fields})
    try:
        trainer = build_trainer(trainer_cfg, cfg.callbacks, run_dir, logger)
        trainer.fit(task, datamodule=datamodule)
        callback = trainer.checkpoint_callback
        # a fitted rule takes no optimiser steps, so no best checkpoint: its last epoch
        best = callback.best_model_score or trainer.callback_metrics.get("val/f1")
        selected = {"val/f1": float("nan") if best is None else float(best)}
        if len(datamodule.datasets["test"]):
            tested = trainer.test(task, datamodule=datamodule,
                                  ckpt_path=callback.best_model_path or None, verbose=False)[0]
        else:  # no test set: the selected weights (restored by validating them) exported
            trainer.validate(task, datamodule=datamodule,
                             ckpt_path=callback.best_model_path or None, verbose=False)
            tested = {}
        if trainer.is_global_zero:
            fields["seconds"] = round(time.monotonic() - started, 1)  # the cell's cost
            _finish(task, datamodule, run_dir, fields, {**selected, **tested}, source, data)
            # model/ holds the selected weights; the Lightning checkpoints (weights plus
            # optimiser state, ~300 MB for a ResNet-18 U-Net) would fill a disk over a curve
            shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    finally:
        tracking.finish()


def _task(encoder: dict, options: dict, semi: dict | None = None,
          rule: dict | None = None) -> SegmentationTask:
    """The task that trains (or tests) ``encoder``: the spectral rule (``rule``: its fitted
    bands and statistics, when restored), semi-supervised with ``semi``, else supervised."""
    if encoder["name"] == SpectralRule.name:
        return SpectralRuleTask(encoder, **(rule or {}), **options)
    if semi:
        return SemiSupervisedTask(encoder, semi, **options)
    return SegmentationTask(encoder, **options)


def _label_budget(cfg: DictConfig) -> tuple[float | None, int | None]:
    """(label fraction, label count): a count overrides the fraction; neither means all."""
    count = cfg.label_count
    return (None if count else (cfg.label_fraction or 1.0)), count


def _datamodule(cfg: DictConfig, data: dict, encoder: dict, semi: dict | None = None,
                unlabelled: dict | None = None) -> TileDataModule:
    """The cell's tiles: its label subset for training, validation and test splits."""
    fraction, count = _label_budget(cfg)
    return TileDataModule(
        data, batch_size=cfg.batch_size, num_workers=cfg.num_workers,
        crop_size=encoder["input_size"], split=cfg.split, samples_per_epoch=cfg.samples_per_epoch,
        balance=cfg.balance, labels={"fraction": fraction, "count": count, "seed": cfg.seed},
        slump_crops=cfg.slump_crops,
        eval_crop_size=encoder["input_size"] if encoder.get("patch_size") else None,
        unlabelled=unlabelled, unlabelled_ratio=semi["unlabelled_ratio"] if semi else 1.0)


def _retest(cfg: DictConfig, run_dir: Path) -> None:
    """Test a done cell's exported model again with today's test code (after a fix of the
    evaluation, say), without training it again: the result's and model.yaml's test metrics
    are replaced; its cost, validation F1, threshold and learning curves are kept."""
    pl.seed_everything(cfg.seed, workers=True)
    result = json.loads((run_dir / RESULT).read_text())
    model = run_dir / "model"
    net, info = load_model(model)  # weights checked against the architecture
    data = OmegaConf.to_container(cfg.data, resolve=True)
    if list(data["bands"]) != list(info["bands"]):
        raise InputError(model, f"trained on bands {', '.join(info['bands'])} but data "
                         f"{data['name']} has {', '.join(data['bands'])}")
    encoder = info["architecture"]
    options = {"mode": info["mode"], "iou_threshold": cfg.iou_threshold,
               "decoder_channels": info.get("decoder_channels")}
    task = _task(encoder, options, rule={"bands": info["bands"], "stats": info["normalization"]})
    task.net.load_state_dict(net.state_dict())
    task.threshold.fill_(info["threshold"])
    datamodule = _datamodule(cfg, data, encoder)
    trainer = hydra.utils.instantiate(cfg.trainer, logger=False, callbacks=[],
                                      default_root_dir=str(run_dir))
    tested = trainer.test(task, datamodule=datamodule, verbose=False)[0]
    if trainer.is_global_zero:
        tested = {k: float(v) for k, v in tested.items()}
        kept = {k: v for k, v in info["metrics"].items() if not k.startswith("test/")}
        metadata = {k: v for k, v in info.items() if k not in ("format", "architecture")}
        export_model(model, task.net, task.spec, {**metadata, "metrics": {**kept, **tested}})
        result = {k: v for k, v in result.items() if not k.startswith("test/")}
        write_atomic(run_dir / RESULT, lambda tmp: tmp.write_text(
            json.dumps({**result, **tested, "retested": True}, indent=1)))
        log.info("retested: %s | test IoU %.3f, object F1 %.3f", model,
                 tested.get("test/iou", float("nan")), tested.get("test/object_f1", float("nan")))


def curve_line(info: dict | None, encoder: str, semi: dict | None) -> str:
    """The curve line a run belongs to: its entry (``entry=<name>``, conf/entry/) or a name
    from its checkpoint (``<ssl>-<encoder>-<data>``, ``random-<encoder>``), plus
    ``+<method>`` when semi-supervised."""
    name = HydraConfig.get().runtime.choices.get("entry")
    if not name:
        name = (f"{info['ssl']}-{encoder}-{info['data']}" if info else
                encoder if encoder == SpectralRule.name else f"random-{encoder}")
    return f"{name}+{semi['name']}" if semi else name


def _semi_supervision(cfg: DictConfig, encoder: dict) -> tuple[dict | None, dict | None]:
    """The semi-supervised method and its unlabelled data; ``(None, None)`` for semi=none."""
    semi = OmegaConf.to_container(cfg.semi, resolve=True)
    unlabelled = cfg.get("unlabelled")
    if semi.get("method") not in METHODS:
        raise InputError("semi.method", f"{semi.get('method')!r} is not a semi-supervised "
                         f"method ({', '.join(METHODS)}); a conf/semi/ config sets it or "
                         "inherits it (defaults: [<method>])")
    if semi["method"] == "none":
        if unlabelled:
            log.warning("unlabelled=%s is not read: semi=none", unlabelled.name)
        return None, None
    if encoder["name"] == SpectralRule.name:
        raise InputError("semi", "the spectral rule has no network to train on unlabelled "
                         "imagery: use semi=none")
    if not unlabelled:
        raise InputError("semi", f"semi={semi['name']} needs unlabelled imagery: "
                         "unlabelled=<data config> (conf/unlabelled/)")
    return semi, OmegaConf.to_container(unlabelled, resolve=True)


def _finish(task, datamodule, run_dir: Path, fields: dict, metrics: dict, source,
            data) -> None:
    """Export the model (weights + yaml) and write the result line the curve reads.

    ``metrics``: the validation F1 the checkpoint was selected on, and its test metrics.
    """
    metrics = {k: float(v) for k, v in metrics.items()}
    metadata = {
        "bands": list(datamodule.bands), "mode": task.hparams.mode,
        "normalization": datamodule.datasets["train"].stats.to_dict(),
        "input_size": task.spec.input_size, "threshold": round(float(task.threshold), 4),
        "decoder_channels": task.hparams.decoder_channels,
        "pretrained_from": str(source) if source else None, "data": data["name"],
        "dem_radius_m": float(data.get("dem_radius_m") or RADIUS_M),
        "auxiliary": used_auxiliary(data, datamodule.bands),
        "resolution_m": data.get("resolution_m"),
        "train_tiles": len(datamodule.datasets["train"]), "metrics": metrics, **fields,
    }
    directory = export_model(run_dir / "model", task.net, task.spec, metadata)
    result = {**fields, "threshold": metadata["threshold"], **metrics, "model": str(directory)}
    write_atomic(run_dir / RESULT, lambda tmp: tmp.write_text(json.dumps(result, indent=1)))
    log.info("model: %s | threshold %.2f | test IoU %.3f, object F1 %.3f", directory,
             result["threshold"], metrics.get("test/iou", float("nan")),
             metrics.get("test/object_f1", float("nan")))


if __name__ == "__main__":
    hydra_main("finetune")
