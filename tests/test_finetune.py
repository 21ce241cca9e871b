import json

import pytest
import torch
import yaml
from cli import run_command

from fakes import prepared_dataset
from rts_ssl.errors import InputError
from rts_ssl.evaluation.metrics import with_ignore
from rts_ssl.models.encoders import EncoderSpec, build_encoder
from rts_ssl.models.export import export_encoder, load_model, read_info, read_weights
from rts_ssl.models.finetune import SegmentationTask
from rts_ssl.models.losses import bce_dice_loss
from rts_ssl.models.pretrained import resolve_pretrained
from rts_ssl.models.segmentation import build_segmentation, load_backbone

RESNET = EncoderSpec("resnet18", "resnet18", 4, 32)
VIT = EncoderSpec("vit_tiny", "vit_tiny_patch16_224", 4, 32, 8)


@pytest.mark.parametrize("spec", [RESNET, VIT])
@pytest.mark.parametrize("mode", ["linear", "frozen", "full"])
def test_heads_give_full_resolution_logits_and_freeze_as_asked(spec, mode):
    task = SegmentationTask(spec.to_dict(), mode=mode)
    logits = task(torch.randn(2, 4, 32, 32))
    assert logits.shape == (2, 1, 32, 32)
    trainable = {n for n, p in task.net.named_parameters() if p.requires_grad}
    backbone = {f"{prefix}.{n}" for prefix in ("unet.encoder.model", "vit")
                for n, _ in task.net.backbone.named_parameters()}
    assert bool(trainable & backbone) == (mode == "full")
    assert trainable - backbone  # a head is always trained


@pytest.mark.parametrize("spec", [RESNET, VIT])
def test_pretrained_weights_are_really_loaded(tmp_path, spec):
    encoder = build_encoder(spec)
    torch.nn.init.normal_(next(encoder.parameters()))
    export_encoder(tmp_path / "enc", encoder, spec, {"bands": ["blue"], "ssl": "simclr"})
    net = build_segmentation(spec, "full")
    load_backbone(net, read_weights(tmp_path / "enc"), "enc")
    exported = read_weights(tmp_path / "enc")
    loaded = net.backbone.state_dict()
    assert exported.keys() == loaded.keys()
    assert all(torch.equal(exported[k], loaded[k]) for k in exported)
    with pytest.raises(InputError, match="do not fit"):
        load_backbone(build_segmentation(RESNET if spec is VIT else VIT, "full"), exported, "x")


def test_loss_ignores_ignored_pixels():
    logits = torch.full((1, 1, 4, 4), -5.0)
    target = torch.zeros(1, 4, 4)
    target[0, 0] = 1
    ignore = torch.zeros(1, 4, 4, dtype=torch.bool)
    with_miss = bce_dice_loss(logits, target, ignore)
    ignore[0, 0] = True
    assert bce_dice_loss(logits, target, ignore) < 0.1 < with_miss


def test_threshold_is_the_first_of_maximum_validation_f1_ignoring_ignored_pixels():
    task = SegmentationTask(RESNET.to_dict())
    prob = torch.cat([torch.full((100,), 0.62), torch.full((1000,), 0.1),
                      torch.full((10,), 0.7), torch.full((5,), 0.5), torch.full((50,), 0.9)])
    target = torch.cat([torch.ones(100), torch.zeros(1065)]).long()
    ignore = torch.cat([torch.zeros(1115), torch.ones(50)]).bool()  # would be FPs at 0.9
    task.val_curve.update(prob, with_ignore(target, ignore))
    task.on_validation_epoch_end()
    # 0.15-0.50 keep 15 false positives, 0.55-0.60 only 10, 0.65 and above lose the slumps
    assert float(task.threshold) == pytest.approx(0.55)
    assert task.val_curve.update_count == 0  # reset for the next epoch


def test_resolve_pretrained(tmp_path):
    assert resolve_pretrained("none", tmp_path) is None
    (tmp_path / "run" / "encoder").mkdir(parents=True)
    (tmp_path / "run" / "encoder" / "encoder.yaml").write_text("format: x\n")
    assert resolve_pretrained(tmp_path / "run", tmp_path) == tmp_path / "run" / "encoder"
    with pytest.raises(InputError, match="not an encoder directory"):
        resolve_pretrained(tmp_path, tmp_path)


@pytest.fixture(scope="module")
def fake_data(tmp_path_factory):
    return prepared_dataset(tmp_path_factory.mktemp("fake"))


def finetune_args(conf_dir, logs, *extra) -> list[str]:
    """A tiny fine-tuning run on the fake data (config dir from ``write_data_config``)."""
    return [f"hydra.searchpath=[file://{conf_dir}]", "data=fake", f"paths.log_dir={logs}",
            "split.test_regions=[east]", "split.val_fraction=0.5", "input_size=32",
            "batch_size=4", "samples_per_epoch=8", "trainer.max_epochs=2", "logger.mode=disabled",
            *extra]


def finetune(fake_data, logs, *extra):
    from test_pretrain import write_data_config

    done = run_command("finetune", *finetune_args(write_data_config(fake_data), logs, *extra))
    assert done.returncode == 0, done.stderr[-3000:]
    run = sorted((logs / "finetune").glob("*"))[-1]
    return run, json.loads((run / "result.json").read_text())


def test_test_metrics_record_the_iou_of_calling_every_pixel_a_slump():
    from rts_ssl.evaluation.metrics import pixel_metrics

    task = SegmentationTask(RESNET.to_dict())
    mask = torch.zeros(2, 32, 32, dtype=torch.uint8)
    mask[0, :8] = 1                                     # 256 slump pixels
    ignore = torch.zeros(2, 32, 32, dtype=torch.bool)
    ignore[0, :4], ignore[1, :16] = True, True          # 128 of them and 512 others ignored
    task.test_step({"image": torch.randn(2, 4, 32, 32), "mask": mask, "ignore": ignore}, 0)
    share = float(task.test_slump_fraction.compute())
    assert share == pytest.approx(128 / (2048 - 640))
    everything = pixel_metrics()
    everything.update(torch.ones(2, 32, 32, dtype=torch.long), with_ignore(mask, ignore))
    assert float(everything.compute()["iou"]) == pytest.approx(share)


def test_cli_frozen_finetune_keeps_the_encoder_and_exports_threshold(fake_data, tmp_path):
    encoder = build_encoder(RESNET)
    export_encoder(tmp_path / "enc", encoder, RESNET,
                   {"bands": ["blue", "green", "red", "nir"], "ssl": "simclr", "data": "fake"})
    run, result = finetune(fake_data, tmp_path / "logs", f"pretrained={tmp_path / 'enc'}",
                           "mode=frozen", "label_count=1")
    info = read_info(run / "model", "model")
    assert info["pretrained"] == "simclr-resnet18-fake" and info["label_count"] == 1
    assert 0.05 <= info["threshold"] <= 0.95 and info["threshold"] == result["threshold"]
    assert {"test/iou", "test/object_f1", "test/slump_fraction", "val/f1"} <= set(info["metrics"])
    model = read_weights(run / "model", "model")
    exported = read_weights(tmp_path / "enc")
    assert all(torch.equal(model[f"unet.encoder.model.{k}"], v) for k, v in exported.items())
    assert info["decoder_channels"] == [128, 64, 32, 16, 16]
    assert load_model(run / "model")[0].unet.decoder is not None  # rebuilt with its widths
    import pandas as pd

    curves = pd.read_csv(run / "metrics.csv")  # learning curves beside W&B
    per_epoch = curves.dropna(subset=["val/iou"])
    assert len(per_epoch) == 2 and per_epoch["val/loss"].notna().all()
    assert curves["train/loss_epoch"].notna().sum() == 2 and result["seconds"] > 0
    assert not (run / "checkpoints").exists()  # the model is in model/; a curve keeps no ckpts


def test_cli_refuses_an_encoder_of_bands_the_data_lacks(fake_data, tmp_path):
    spec = EncoderSpec("resnet18", "resnet18", 5, 32)
    export_encoder(tmp_path / "enc", build_encoder(spec), spec,
                   {"bands": ["B4", "B3", "B2", "B8", "slope"], "ssl": "mae", "data": "x"})
    from test_pretrain import write_data_config

    done = run_command("finetune", f"hydra.searchpath=[file://{write_data_config(fake_data)}]",
                       "data=fake", f"paths.log_dir={tmp_path}",
                       f"pretrained={tmp_path / 'enc'}", "logger.mode=disabled")
    assert done.returncode == 2
    assert "encoder was trained on bands B4, B3, B2, B8, slope but the data has blue" in done.stderr


def test_cli_single_run_of_a_held_cell_is_an_error_not_a_silent_skip(fake_data, tmp_path):
    from test_files import held_by_another_process
    from test_pretrain import write_data_config

    from rts_ssl.files import LOCK

    cell = tmp_path / "cell"
    with held_by_another_process(cell / LOCK) as holder:
        done = run_command("finetune", *finetune_args(write_data_config(fake_data), tmp_path,
                                                      f"hydra.run.dir={cell}"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: {cell}: is being run by process {holder.pid}, which writes the result: "
        "wait for it, or run in another folder")
    assert not (cell / "result.json").exists()


@pytest.mark.parametrize("extra", [["encoder=resnet18"], ["encoder=spectral_rule"],
                                   ["encoder=resnet18", "semi=mean_teacher", "unlabelled=fake"]],
                         ids=["resnet18", "spectral_rule", "mean_teacher"])
def test_ddp_two_cpu_processes_fine_tune_one_cell(fake_data, tmp_path, extra):
    """Under DDP the second rank re-runs the command in the same folder: it must follow rank
    zero, which holds the folder, not find it held and leave rank zero waiting. The rule,
    with nothing for DDP to train, is fitted in one process; a semi-supervised run trains
    its student on both ranks."""
    import subprocess
    import sys

    from test_semi import config_dir

    cell = tmp_path / "cell"
    args = finetune_args(config_dir(fake_data), tmp_path, "trainer.max_epochs=1",
                         f"hydra.run.dir={cell}", *extra)
    done = subprocess.run([sys.executable, "-m", "rts_ssl", "finetune", *args, "trainer=ddp",
                           "trainer.accelerator=cpu", "trainer.devices=2"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (cell / "model" / "model.safetensors").is_file()
    two_ranks = json.loads((cell / "result.json").read_text())
    assert two_ranks["semi"] == ("mean_teacher" if "unlabelled=fake" in extra else "none")
    done = run_command("finetune", *args, "retest=true")  # the same model in one process
    assert done.returncode == 0, done.stderr[-3000:]
    one = json.loads((cell / "result.json").read_text())
    tested = [k for k in two_ranks if k.startswith("test/")]
    assert len(tested) > 5 and {k: one[k] for k in tested} == pytest.approx(
        {k: two_ranks[k] for k in tested})  # the two ranks' shares pooled, as one process


@pytest.mark.parametrize("encoder", ["resnet18", "spectral_rule"])
def test_retest_scores_a_done_cell_again_without_training_it(fake_data, tmp_path, encoder):
    from test_pretrain import write_data_config

    cell = tmp_path / "cell"
    args = finetune_args(write_data_config(fake_data), tmp_path, f"encoder={encoder}",
                         f"hydra.run.dir={cell}")
    done = run_command("finetune", *args, "retest=true")  # not done yet: trained
    assert done.returncode == 0, done.stderr[-3000:]
    trained = json.loads((cell / "result.json").read_text())
    curves = (cell / "metrics.csv").read_text()
    stale = {**trained, "test/iou": 7.0, "test/object_f1": 7.0, "test/old_metric": 7.0}
    (cell / "result.json").write_text(json.dumps(stale))
    done = run_command("finetune", *args, "retest=true")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "retested:" in done.stderr
    retested = json.loads((cell / "result.json").read_text())
    assert retested.pop("retested") is True and "test/old_metric" not in retested
    assert retested == pytest.approx(trained)  # the same weights, threshold and test tiles
    assert retested["seconds"] == trained["seconds"]  # not trained again
    assert (cell / "metrics.csv").read_text() == curves
    info = read_info(cell / "model", "model")
    assert info["metrics"]["test/iou"] == pytest.approx(trained["test/iou"])
    assert info["metrics"]["val/f1"] == pytest.approx(trained["val/f1"])
    done = run_command("finetune", *args, "retest=true", "data.bands=[blue,green,red]")
    assert done.returncode == 2
    assert "model: trained on bands blue, green, red, nir but data fake has blue, green, red" \
        in done.stderr


def test_cli_random_init_label_fraction(fake_data, tmp_path):
    from test_pretrain import write_data_config

    done = run_command("finetune", *finetune_args(write_data_config(fake_data), tmp_path / "logs",
                                                  "+data.label_fraction=0.5",  # an old config
                                                  "encoder=vit_tiny"))
    assert "data.label_fraction= is deprecated: the same is label_fraction=" in done.stderr
    result = json.loads((sorted((tmp_path / "logs" / "finetune").glob("*"))[-1]
                         / "result.json").read_text())
    assert result["pretrained"] == "random-vit_tiny" and result["label_fraction"] == 0.5
    assert yaml.safe_load(json.dumps(result))["seed"] == 0


def test_cli_without_test_set_exports_the_model_with_validation_metrics(fake_data, tmp_path):
    run, result = finetune(fake_data, tmp_path / "logs", "split.test_regions=[]")
    assert "val/f1" in result and not any(k.startswith("test/") for k in result)
    assert read_info(run / "model", "model")["threshold"] == result["threshold"]


@pytest.mark.parametrize(("override", "message"), [
    ("label_fraction=0", "label_fraction: 0 is not a fraction in (0, 1] or null"),
    ("+data.label_fraction=0", "label_fraction: 0 is not a fraction in (0, 1] or null"),
    ("label_count=100000", "label_count: label_count 100000 exceeds the"),
    ("split.val_fraction=0", "split: no validation tiles"),
])
def test_cli_label_subsets_and_splits_that_cannot_be_drawn(fake_data, tmp_path, override,
                                                          message):
    from test_pretrain import write_data_config

    done = run_command("finetune", f"hydra.searchpath=[file://{write_data_config(fake_data)}]",
                       "data=fake", f"paths.log_dir={tmp_path}", "split.test_regions=[east]",
                       "input_size=32", "logger.mode=disabled", override)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: {message}")


def test_test_objects_are_counted_on_whole_scenes_not_window_pieces(tmp_path):
    import pytorch_lightning as pl

    from rts_ssl.data.datamodule import TileDataModule
    from rts_ssl.data.vectorise import mask_objects

    class Oracle(SegmentationTask):
        """Predicts the reference exactly; records the object counts of the test."""

        def test_step(self, batch, batch_idx):
            self.truth = batch["mask"]
            super().test_step(batch, batch_idx)

        def forward(self, images):
            return self.truth[:, None].float() * 20 - 10

        def on_test_epoch_end(self):
            self.counts = [int(getattr(self.test_objects, name))
                           for name in self.test_objects.COUNTS]
            super().on_test_epoch_end()

    root = prepared_dataset(tmp_path)  # one square slump in every scene (one footprint)
    data = {"prepared": str(root / "prepared"), "bands": ["blue", "green", "red", "nir"]}
    module = TileDataModule(data, split={"test_regions": ["west"], "val_fraction": 0.25},
                            labels={"fraction": 1.0}, eval_crop_size=16)
    module.setup()
    test = module.datasets["test"]
    batch = test.__getitems__(list(range(len(test)))).batched
    pieces = sum(len(mask_objects((m & ~i).numpy().astype(bool)))
                 for m, i in zip(batch["mask"], batch["ignore"], strict=True))
    with_slump = len(set(test.layout.scenes[batch["mask"].flatten(1).bool().any(1)]))
    assert with_slump == 4 and pieces > 4  # west: 2 places x 2 dates; windows cut them
    task = Oracle(RESNET.to_dict())
    pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
               enable_model_summary=False).test(task, datamodule=module, verbose=False)
    assert task.counts == [4, 0, 0]  # one whole slump per scene


def test_encoder_frozen_epochs_keep_the_encoder_then_train_it():
    """LP-FT: in the frozen epochs the decoder learns and the encoder (weights and
    normalisation statistics) does not move; afterwards both learn."""
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    batches = [{"image": torch.randn(2, 4, 32, 32), "mask": torch.rand(2, 32, 32) > 0.7,
                "ignore": torch.zeros(2, 32, 32, dtype=torch.bool)} for _ in range(2)]
    states = []

    class Snapshots(pl.Callback):
        def on_train_epoch_end(self, trainer, task):
            states.append({k: v.clone() for k, v in task.net.state_dict().items()})

    task = SegmentationTask(RESNET.to_dict(), encoder_frozen_epochs=1)
    start = {k: v.clone() for k, v in task.net.state_dict().items()}
    pl.Trainer(accelerator="cpu", max_epochs=2, logger=False, enable_checkpointing=False,
               enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
               callbacks=[Snapshots()]).fit(task, DataLoader(batches, batch_size=None))
    encoder = [k for k in start if k.startswith("unet.encoder.")]
    moved = [{k for k in start if not torch.equal(start[k], s[k])} for s in states]
    assert encoder and not moved[0] & set(encoder)  # running statistics included
    assert moved[0] - set(encoder)                    # the decoder learnt
    assert {k for k in encoder if k.endswith("running_mean")} <= moved[1]
    assert any(k.endswith("conv1.weight") for k in moved[1] & set(encoder))
