import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
import yaml

from fakes import prepared_dataset
from rts_ssl.data.datamodule import TileDataModule
from rts_ssl.data.dataset import TileDataset
from rts_ssl.errors import InputError
from rts_ssl.models.embedding_health import effective_rank
from rts_ssl.models.encoders import EncoderSpec, build_encoder
from rts_ssl.models.export import export_encoder, load_encoder, read_encoder_info
from rts_ssl.models.mae import MAETask
from rts_ssl.models.pretrained import pretrained_weights
from rts_ssl.models.simclr import SimCLRTask

OPTIMIZER = {"name": "adamw", "lr": 1e-3, "weight_decay": 1e-4, "warmup_epochs": 0}
RESNET = {"name": "resnet18", "timm_name": "resnet18", "input_size": 32}
VIT = {"name": "vit_tiny", "timm_name": "vit_tiny_patch16_224", "input_size": 32,
       "patch_size": 8}


@pytest.fixture(scope="module")
def fake_data(tmp_path_factory):
    return prepared_dataset(tmp_path_factory.mktemp("fake"))


def fixed_batch(root, bands=None, size=32):
    dataset = TileDataset(root / "prepared", crop_size=size, bands=bands)
    torch.manual_seed(0)
    return torch.stack([dataset[i]["image"] for i in range(16)])


def train_steps(task, images, steps=20):
    """Steps on one batch with the same random views / masks each step (a fixed target)."""
    optimizer = torch.optim.AdamW(task.parameters(), lr=1e-3)
    losses = []
    for _ in range(steps):
        torch.manual_seed(123)
        loss = task.ssl_loss(images)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize(("task_class", "encoder"), [(SimCLRTask, RESNET), (MAETask, VIT)])
def test_loss_is_finite_and_decreases_on_a_fixed_batch(fake_data, task_class, encoder):
    torch.manual_seed(0)
    task = task_class({**encoder, "in_chans": 4}, OPTIMIZER)
    losses = train_steps(task, fixed_batch(fake_data))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-5:]) / 5 < 0.9 * sum(losses[:5]) / 5, losses


@pytest.mark.parametrize(("task_class", "encoder"), [(SimCLRTask, RESNET), (MAETask, VIT)])
def test_thirteen_band_input(task_class, encoder):
    task = task_class({**encoder, "in_chans": 13}, OPTIMIZER)
    loss = task.ssl_loss(torch.randn(4, 13, 32, 32))
    loss.backward()
    assert torch.isfinite(loss) and task.encoder(torch.randn(2, 13, 32, 32)).shape[0] == 2


def test_mae_refuses_a_cnn():
    with pytest.raises(InputError, match="MAE needs a ViT encoder"):
        MAETask({**RESNET, "in_chans": 4}, OPTIMIZER)


@pytest.mark.parametrize("encoder", [RESNET, VIT])
def test_exported_encoder_reloads_with_identical_embeddings(tmp_path, encoder):
    task = SimCLRTask({**encoder, "in_chans": 4}, OPTIMIZER)
    task.encoder.eval()
    images = torch.randn(3, 4, 32, 32)
    with torch.no_grad():
        before = task.encoder(images)
    meta = {"bands": ["blue", "green", "red", "nir"], "ssl": "simclr"}
    export_encoder(tmp_path / "enc", task.encoder, task.spec, meta)
    assert sorted(p.name for p in (tmp_path / "enc").iterdir()) == [
        "encoder.safetensors", "encoder.yaml"]
    loaded, info = load_encoder(tmp_path / "enc")
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), before)
    assert info["architecture"] == EncoderSpec(**{**encoder, "in_chans": 4}).to_dict()
    assert info["bands"] == meta["bands"]


def test_encoder_weights_are_mapped_to_the_data_bands_by_name(tmp_path):
    optical = ["blue", "green", "red", "nir"]
    spec = EncoderSpec(**{**RESNET, "in_chans": 4})
    encoder = build_encoder(spec)
    with torch.no_grad():
        for k in range(4):
            encoder.conv1.weight[:, k] = float(k + 1)
    export_encoder(tmp_path / "cnn", encoder, spec, {"bands": optical})
    info = read_encoder_info(tmp_path / "cnn")
    same = pretrained_weights(tmp_path / "cnn", info, ["B2", "B3", "B4", "B8"])  # equivalents
    torch.testing.assert_close(same["conv1.weight"], encoder.conv1.weight)
    # optical encoder, data optical + terrain in another order: mapped, new bands at zero
    mapped = pretrained_weights(tmp_path / "cnn", info, ["B4", "slope", "B3", "B2", "B8"])
    assert [float(mapped["conv1.weight"][0, k, 0, 0]) for k in range(5)] == [3, 0, 2, 1, 4]
    torch.testing.assert_close(mapped["layer1.0.conv1.weight"], encoder.layer1[0].conv1.weight)
    with pytest.raises(InputError, match="trained on bands blue, green, red, nir but the data "
                                         "has B4, B3, B2"):
        pretrained_weights(tmp_path / "cnn", info, ["B4", "B3", "B2"])  # nir missing
    vit_spec = EncoderSpec(**{**VIT, "in_chans": 4})
    export_encoder(tmp_path / "vit", build_encoder(vit_spec), vit_spec, {"bands": optical})
    vit_info = read_encoder_info(tmp_path / "vit")
    assert pretrained_weights(tmp_path / "vit", vit_info, ["B2", "B3", "B4", "B8"])
    with pytest.raises(InputError, match="a ViT exactly its bands"):
        pretrained_weights(tmp_path / "vit", vit_info, ["B2", "B3", "B4", "B8", "slope"])


def test_unknown_encoder_format_is_refused(tmp_path):
    (tmp_path / "encoder.yaml").write_text("format: something-else\n")
    with pytest.raises(InputError, match="unknown encoder format"):
        read_encoder_info(tmp_path)


def write_data_config(root):
    conf = root / "conf" / "data"
    conf.mkdir(parents=True, exist_ok=True)
    info = yaml.safe_load((root / "prepared" / "dataset.yaml").read_text())
    (conf / "fake.yaml").write_text(yaml.safe_dump({
        "name": "fake", "sensor": None, "bands": info["bands"], "band_names": None,
        "synthetic": None, "root": str(root), "scenes": str(root / "scenes"),
        "labels": str(root / "labels.gpkg"), "labels_layer": None, "footprints": None,
        "footprints_layer": None, "id_column": "image_id", "region": None,
        "pattern": r"(?P<region>[^/]+)/(?P<location>[^/]+)_(?P<date>\d{4}-\d{2}-\d{2})\.tif$",
        "tiles": {"size": 64, "overlap": 32, "max_nodata_fraction": 0.5,
                  "location_block_m": 100},
        "prepared": str(root / "prepared")}))
    return root / "conf"


def pretrain_cmd(fake_data, logs, *extra, flags=()):
    return [sys.executable, "-m", "rts_ssl", "pretrain", *flags, "--config-dir",
            str(write_data_config(fake_data)), "data=fake", f"paths.log_dir={logs}",
            "input_size=32", "batch_size=8", "samples_per_epoch=16", "trainer.max_epochs=2",
            "split.val_fraction=0.25", *extra]


def test_cli_multirun_simclr_and_mae_export_encoders_and_offline_wandb(fake_data, tmp_path):
    done = subprocess.run(pretrain_cmd(fake_data, tmp_path, "ssl=simclr,mae", "encoder=vit_tiny",
                                       flags=["-m"]), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = sorted((tmp_path / "pretrain").glob("*-vit_tiny-fake/*"))
    assert [r.parent.name for r in runs] == ["mae-vit_tiny-fake", "simclr-vit_tiny-fake"]
    for run in runs:
        info = yaml.safe_load((run / "encoder" / "encoder.yaml").read_text())
        assert info["ssl"] in {"simclr", "mae"} and info["bands"] == [
            "blue", "green", "red", "nir"]
        assert len(info["normalization"]["mean"]) == 4 and info["wandb_run"]
        assert (run / "checkpoints" / "last.ckpt").is_file()
        # the offline run log (protobuf records) holds the metric history
        logged = next(run.glob("wandb/offline-run-*/run-*.wandb")).read_bytes()
        for key in (b"train/loss_epoch", b"val/loss", b"val/embedding_std", b"val/effective_rank"):
            assert key in logged, key
    assert "encoder: " in done.stdout and "offline" in done.stdout


def test_an_experiments_recipes_resume_and_sweeps_side_by_side_share_them(fake_data, tmp_path):
    from test_files import held_by_another_process

    from rts_ssl.files import LOCK

    sweep = pretrain_cmd(fake_data, tmp_path, "ssl=simclr,mae", "encoder=vit_tiny",
                         "trainer.max_epochs=1", "logger.mode=disabled",
                         "hydra.sweep.subdir=${ssl.name}", flags=["-m"])  # as experiments do
    recipes = tmp_path / "pretrain"
    with held_by_another_process(recipes / "mae" / LOCK) as holder:
        first = subprocess.run(sweep, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-3000:]
    assert f"is being run by process {holder.pid}" in first.stdout + first.stderr
    assert sorted(p.parent.parent.name for p in recipes.glob("*/encoder/encoder.yaml")) == [
        "simclr"]
    stamp = (recipes / "simclr" / "encoder" / "encoder.safetensors").stat().st_mtime_ns
    again = subprocess.run(sweep, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already done" in again.stdout + again.stderr
    assert (recipes / "simclr" / "encoder" / "encoder.safetensors").stat().st_mtime_ns == stamp
    assert (recipes / "mae" / "encoder" / "encoder.yaml").is_file()


def test_resume_takes_the_runs_own_checkpoint_else_the_newest_run(tmp_path):
    from rts_ssl.training import resume_checkpoint

    runs, own = tmp_path / "runs", tmp_path / "experiment" / "mae-vit_tiny"
    for stamp, run in enumerate(("b", "a")):  # b is the newer run
        (runs / run / "checkpoints").mkdir(parents=True)
        (runs / run / "checkpoints" / "last.ckpt").write_bytes(b"")
        os.utime(runs / run / "checkpoints" / "last.ckpt", (2000 - stamp, 2000 - stamp))
    assert resume_checkpoint(True, runs, own) == runs / "b" / "checkpoints" / "last.ckpt"
    (own / "checkpoints").mkdir(parents=True)
    (own / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert resume_checkpoint("true", runs, own) == own / "checkpoints" / "last.ckpt"
    assert resume_checkpoint(False, runs, own) is None
    with pytest.raises(InputError, match="no earlier run"):
        resume_checkpoint(True, tmp_path / "none", tmp_path / "new")


def test_resume_after_a_killed_run_keeps_finished_epochs(fake_data, tmp_path):
    cmd = pretrain_cmd(fake_data, tmp_path, "trainer.max_epochs=40", "logger.mode=disabled")
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.time() + 120
    last = None
    while time.time() < deadline and last is None:
        last = next(tmp_path.glob("pretrain/*/*/checkpoints/last.ckpt"), None)
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert last is not None, "no checkpoint within 120 s"
    epoch = torch.load(last, map_location="cpu", weights_only=True)["epoch"]
    assert epoch >= 0
    resume = pretrain_cmd(fake_data, tmp_path, f"trainer.max_epochs={epoch + 2}",
                          "resume=true", "logger.mode=disabled")
    done = subprocess.run(resume, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = sorted(tmp_path.glob("pretrain/*/*/checkpoints/last.ckpt"),
                     key=lambda p: p.stat().st_mtime)[-1]
    state = torch.load(resumed, map_location="cpu", weights_only=True)
    assert state["epoch"] == epoch + 1  # continued: only the missing epoch(s) ran
    assert state["global_step"] == (epoch + 2) * 2  # 16 samples / batch 8 = 2 steps/epoch


def test_ddp_two_cpu_processes(fake_data, tmp_path):
    done = subprocess.run(
        pretrain_cmd(fake_data, tmp_path, "trainer=ddp", "trainer.accelerator=cpu",
                     "trainer.devices=2", "trainer.max_epochs=1", "batch_size=4"),
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = list(tmp_path.glob("pretrain/simclr-resnet18-fake/*"))
    assert len(runs) == 1  # both ranks share the run directory
    state = torch.load(runs[0] / "checkpoints" / "last.ckpt", map_location="cpu",
                       weights_only=True)
    assert state["global_step"] == 2  # 16 samples / (4 per process x 2 processes)
    assert (runs[0] / "encoder" / "encoder.safetensors").is_file()
    assert len(list(runs[0].glob("wandb/offline-run-*"))) == 1  # rank 0 logs alone
    assert done.stdout.count("encoder: ") == 1
    # validation gathers the embeddings of both ranks: the logged effective rank is that of
    # the exported encoder (the one epoch's) over the whole validation set, not rank 0's half
    cfg = yaml.safe_load((runs[0] / ".hydra" / "config.yaml").read_text())
    datamodule = TileDataModule(cfg["data"], batch_size=4, crop_size=32, eval_crop_size=32,
                                split=cfg["split"])
    datamodule.setup("fit")
    encoder, _ = load_encoder(runs[0] / "encoder")
    with torch.no_grad():
        features = torch.cat([encoder(batch["image"])
                              for batch in datamodule.val_dataloader()])
    logged = pd.read_csv(runs[0] / "metrics.csv")["val/effective_rank"].dropna()
    assert len(features) > 4 and len(logged) == 1
    assert logged.iloc[0] == pytest.approx(effective_rank(features), rel=1e-4)
    assert "sync_dist=True" not in done.stderr  # no per-rank epoch metric left


def test_encoder_specs_of_earlier_exports_read_img_size_as_input_size():
    spec = EncoderSpec.from_dict({"name": "vit_tiny", "timm_name": "vit_tiny_patch16_224",
                                  "in_chans": 4, "img_size": 32, "patch_size": 8})
    assert spec.input_size == 32 and spec.to_dict()["input_size"] == 32
    assert "img_size" not in spec.to_dict()
