"""Every primary config composes with every data / ssl / encoder option (no stale keys)."""

import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from rts_ssl.commands import COMMANDS as ALL_COMMANDS
from rts_ssl.commands.curve import cell_selection, grid_values
from rts_ssl.config_checks import check_config
from rts_ssl.data.splits import FOLD
from rts_ssl.errors import InputError
from rts_ssl.models.semi import METHODS

CONF = Path(__file__).resolve().parents[1] / "conf"
DATA = sorted(p.stem for p in (CONF / "data").glob("*.yaml"))
COMMANDS = ("prepare", "pretrain", "finetune", "curve", "quicklook", "bench")


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("data", DATA)
def test_primary_configs_compose_with_every_data_config(command, data):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose(command, overrides=[f"data={data}"])
    resolved = OmegaConf.to_container(cfg.data, resolve=True)
    assert resolved["bands"] and resolved["tiles"]["size"] > 0
    assert "prepared" in resolved


NETWORKS = sorted(p.stem for p in (CONF / "encoder").glob("*.yaml") if p.stem != "spectral_rule")


@pytest.mark.parametrize("ssl", ["simclr", "mae"])
@pytest.mark.parametrize("encoder", NETWORKS)
def test_pretrain_sweep_options_compose(ssl, encoder):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("pretrain", overrides=[f"ssl={ssl}", f"encoder={encoder}", "trainer=ddp"])
    assert cfg.ssl.task._target_.endswith(("SimCLRTask", "MAETask"))
    assert cfg.trainer.strategy == "ddp" and cfg.encoder.timm_name


SEMI = sorted(p.stem for p in (CONF / "semi").glob("*.yaml"))


@pytest.mark.parametrize("semi", SEMI)
def test_semi_configs_name_their_curve_line_and_a_known_method(semi):
    """A variant of a method (fixmatch_balanced) is its own line, trained by its method."""
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("finetune", overrides=[f"semi={semi}"]).semi
    assert cfg.name == semi and cfg.method in METHODS
    assert cfg.method == "none" or 0 < cfg.confidence < 1


EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_for_every_command_it_names(experiment):
    """Each command an experiment's header names composes with it; every entry of its grid
    composes for `finetune`, and the pretrained ones are the folders that the `pretrain`
    runs named in the header sweep into."""
    header = (CONF / "experiment" / f"{experiment}.yaml").read_text()
    runs = re.findall(r"python -m rts_ssl (\w+) experiment=(\w+)", header)
    assert (
        runs and {name for _, name in runs} >= {experiment}
    ), "the header names the commands that run the experiment"
    with initialize_config_dir(str(CONF), version_base="1.3"):
        for command, name in runs:
            cfg = compose(command, overrides=[f"experiment={name}"])
            check_config(cfg)
            if command not in ("pretrain", "curve", "finetune"):
                OmegaConf.to_container(cfg, resolve=False)
        jobs = [job for command, name in runs if command == "pretrain"
                for job in _pretrain_jobs(name)]
        if not jobs:
            return
        curve = compose("curve", overrides=[f"experiment={experiment}"])
        grid = grid_values(curve.grid)
        assert curve.output.startswith(curve.experiment_dir) and cell_selection(curve)[FOLD]
        pretrained = []
        for entry in grid["entry"]:
            cell = compose("finetune", overrides=[f"experiment={experiment}", f"entry={entry}"])
            check_config(cell)
            if cell.pretrained != "none":
                pretrained.append(cell.pretrained)
        assert pretrained and set(pretrained) <= set(jobs)


def _pretrain_jobs(experiment: str) -> list[str]:
    """The encoder folders `pretrain experiment=<experiment>` writes (one per recipe)."""
    pretrain = compose("pretrain", overrides=[f"experiment={experiment}"],
                       return_hydra_config=True)
    params = dict(pretrain.hydra.sweeper.params)
    assert pretrain.hydra.mode.name == "MULTIRUN"
    jobs = []
    for recipe in params.pop("+recipe").split(","):
        overrides = [f"experiment={experiment}", f"+recipe={recipe}",
                     *(f"{k}={v}" for k, v in params.items())]
        job = compose("pretrain", overrides=overrides, return_hydra_config=True)
        assert job.encoder.patch_size or job.ssl.name != "mae"  # MAE needs a ViT
        jobs.append(f"{job.hydra.sweep.dir}/{job.ssl.name}-{job.encoder.name}")
        OmegaConf.to_container(job.data, resolve=True)
    return jobs


def test_pretrain_and_finetune_sweep_an_experiment_and_the_others_run_once():
    import subprocess
    import sys

    for command, mode in (("curve", "RUN"), ("pretrain", "MULTIRUN"), ("finetune", "MULTIRUN")):
        done = subprocess.run([sys.executable, "-m", "rts_ssl", command,
                               "experiment=label_efficiency_synthetic", "--cfg", "hydra"],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-1000:]
        assert f"mode: {mode}" in done.stdout


@pytest.mark.parametrize("command", sorted(ALL_COMMANDS))
def test_default_configs_pass_the_up_front_checks(command):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        check_config(compose(command))


def test_config_checks_name_the_key_and_the_range():
    with initialize_config_dir(str(CONF), version_base="1.3"):
        for override, words in [("label_fraction=0", "label_fraction: 0 is not a "
                                 "fraction in (0, 1] or null"),
                                ("head.lr=-1", "head.lr: -1 is not a learning rate > 0"),
                                ("input_size=64.5", "input_size: 64.5 is not an integer"),
                                ("data.tiles.overlap=512", "data.tiles.overlap: 512 must be "
                                 "smaller than data.tiles.size"),
                                ("data.resolution_m=0", "data.resolution_m: 0 is not a "
                                 "pixel size > 0 (m) or null"),
                                ("semi=fixmatch_share semi.slump_share=0", "semi.slump_share: 0 "
                                 "is not a share in (0, 1] or null")]:
            with pytest.raises(InputError, match=re.escape(words)):
                check_config(compose("finetune", overrides=override.split()))


def test_callbacks_and_logger_are_config_groups_with_targets():
    from hydra.utils import get_class

    with initialize_config_dir(str(CONF), version_base="1.3"):
        for command, metric, mode in (("pretrain", "val/loss", "min"),
                                      ("finetune", "val/f1", "max")):
            cfg = compose(command, overrides=[
                "+callbacks.stop={_target_: pytorch_lightning.callbacks.EarlyStopping, "
                "monitor: val/loss}"])
            checkpoint = cfg.callbacks.model_checkpoint
            assert (checkpoint.monitor, checkpoint.mode) == (metric, mode)
            assert get_class(checkpoint._target_).__name__ == "ModelCheckpoint"
            assert get_class(cfg.callbacks.stop._target_).__name__ == "EarlyStopping"
            assert get_class(cfg.logger._target_).__name__ == "WandbLogger"
