"""Every primary config composes with every data / ssl / encoder option (no stale keys)."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

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
    assert {"label_fraction", "label_count", "prepared"} <= set(resolved)


@pytest.mark.parametrize("ssl", ["simclr", "mae"])
@pytest.mark.parametrize("encoder", sorted(p.stem for p in (CONF / "encoder").glob("*.yaml")))
def test_pretrain_sweep_options_compose(ssl, encoder):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("pretrain", overrides=[f"ssl={ssl}", f"encoder={encoder}", "trainer=ddp"])
    assert cfg.ssl.task._target_.endswith(("SimCLRTask", "MAETask"))
    assert cfg.trainer.strategy == "ddp" and cfg.encoder.timm_name
