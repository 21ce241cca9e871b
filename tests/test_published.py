"""Published torchgeo weights as encoders: input channels mapped to our bands by name."""

import subprocess
import sys
import urllib.error

import pytest
import timm
import torch
from torchvision.models._api import WeightsEnum

from rts_ssl.errors import InputError
from rts_ssl.models.export import load_encoder
from rts_ssl.models.pretrained import resolve_pretrained

NAME = "ResNet18_Weights.SENTINEL2_ALL_MOCO"


def fake_published_state(self, *args, **kwargs):
    """What the SSL4EO-S12 ResNet-18 download holds: timm layout, 13 input channels (channel
    k of the first layer filled with k), and the classifier."""
    torch.manual_seed(0)
    state = timm.create_model("resnet18", in_chans=13).state_dict()
    for k in range(13):
        state["conv1.weight"][:, k] = float(k)
    return state


def test_torchgeo_weights_map_channels_by_band_name(tmp_path, monkeypatch):
    monkeypatch.setattr(WeightsEnum, "get_state_dict", fake_published_state)
    # torchgeo's order: B1 B2 B3 B4 B5 B6 B7 B8 B8a B9 B10 B11 B12
    encoder_dir = resolve_pretrained(f"torchgeo:{NAME}", tmp_path,
                                     ["B4", "green", "B02", "nir", "slope"])
    encoder, info = load_encoder(encoder_dir)
    weight = encoder.conv1.weight
    assert [float(weight[0, k, 0, 0]) for k in range(5)] == [3.0, 2.0, 1.0, 7.0, 0.0]
    assert info["bands"] == ["B4", "green", "B02", "nir", "slope"]
    assert info["ssl"] == "torchgeo-moco" and info["architecture"]["name"] == "resnet18"
    reference = fake_published_state(None)
    torch.testing.assert_close(encoder.layer4[1].conv2.weight,
                               reference["layer4.1.conv2.weight"])
    again = resolve_pretrained(f"torchgeo:{NAME}", tmp_path, ["B4", "green", "B02", "nir",
                                                              "slope"])
    assert again == encoder_dir  # made once per weights and bands


def test_offline_or_unknown_weights_are_one_line_errors(tmp_path, monkeypatch):
    def offline(self, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", offline)
    with pytest.raises(InputError, match=r"torchgeo:ResNet18_Weights\.SENTINEL2_ALL_MOCO: "
                                         r"cannot load the published weights \(URLError"):
        resolve_pretrained(f"torchgeo:{NAME}", tmp_path, ["B2"])
    with pytest.raises(InputError, match="not a torchgeo weights enum"):
        resolve_pretrained("torchgeo:ResNet18_Weights.NOPE", tmp_path, ["B2"])
    with pytest.raises(InputError, match="weights are not supported"):
        resolve_pretrained("torchgeo:ViTSmall16_Weights.SENTINEL2_ALL_MOCO", tmp_path, ["B2"])


def test_finetune_cli_offline_gives_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", "import urllib.request, sys; "
         "from torchvision.models._api import WeightsEnum; "
         "WeightsEnum.get_state_dict = lambda *a, **k: (_ for _ in ()).throw("
         "urllib.error.URLError('offline')); "
         "from rts_ssl.__main__ import main; sys.argv[0] = 'rts_ssl'; "
         f"main(['finetune', 'pretrained=torchgeo:{NAME}', 'paths.cache_dir={tmp_path}', "
         f"'paths.log_dir={tmp_path}', 'logger.mode=disabled'])"],
        capture_output=True, text=True)
    assert done.returncode == 2, done.stderr[-1500:]
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: torchgeo:{NAME}: cannot "
                                                           "load the published weights")
    assert "Traceback" not in done.stderr
