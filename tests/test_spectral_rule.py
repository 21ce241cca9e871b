"""The spectral-rule baseline: thresholds fitted on training pixels, exported like a model."""

import numpy as np
import pytest
import torch

from rts_ssl.data.normalization import BandStats
from rts_ssl.errors import InputError
from rts_ssl.models.encoders import EncoderSpec
from rts_ssl.models.export import export_model, load_model
from rts_ssl.models.finetune import SpectralRuleTask

BANDS = ["blue", "green", "red", "nir"]
STATS = BandStats(tuple(BANDS), (0,) * 4, (5000,) * 4, (1000,) * 4, (400,) * 4)
SPEC = EncoderSpec("spectral_rule", None, 4, 32)


def batch(rng):
    """Green tundra (NDVI ~0.6, dim) with bare slumps (NDVI ~0.05, bright) on the left half
    of each image, plus bright vegetated pixels and dark bare pixels as look-alikes."""
    raw = np.empty((8, 4, 32, 32))
    raw[:, :3] = rng.normal(600, 30, (8, 3, 32, 32))  # visible
    raw[:, 3] = rng.normal(2400, 60, (8, 32, 32))  # nir
    mask = np.zeros((8, 32, 32), bool)
    mask[:, :, :16] = rng.random((8, 32, 16)) < 0.3
    raw[:, :3][np.broadcast_to(mask[:, None], raw[:, :3].shape)] = 1500
    raw[:, 3][mask] = 1650
    look = ~mask & (rng.random((8, 32, 32)) < 0.1)  # bright but green
    raw[:, :3][np.broadcast_to(look[:, None], raw[:, :3].shape)] = 1500
    raw[:, 3][look] = 5000
    dark = ~mask & ~look & (rng.random((8, 32, 32)) < 0.1)  # bare but dark: water, shadow
    raw[:, :3][np.broadcast_to(dark[:, None], raw[:, :3].shape)] = 300
    raw[:, 3][dark] = 310
    image = (torch.tensor(raw, dtype=torch.float32) - 1000) / 400
    return {"image": image, "mask": torch.tensor(mask).long(),
            "ignore": torch.zeros(8, 32, 32, dtype=torch.bool)}


def test_rule_fits_thresholds_that_separate_bare_bright_ground(tmp_path):
    rng = np.random.default_rng(0)
    # an experiment's head options reach the rule too; it has no encoder to freeze
    task = SpectralRuleTask(SPEC.to_dict(), BANDS, STATS.to_dict(), encoder_frozen_epochs=10)
    train = batch(rng)
    task.on_train_batch_start(train, 0)
    task.training_step(train, 0)
    task.log = lambda *args, **kwargs: None
    task.on_validation_epoch_start()
    assert 0.05 < float(task.net.index_max) < 0.5  # slumps ~0.05, tundra ~0.6
    assert 300 < float(task.net.brightness_min) <= 1500  # above the dark bare pixels
    test = batch(np.random.default_rng(1))
    predicted = task(test["image"])[:, 0] > 0
    assert torch.equal(predicted, test["mask"].bool())  # both look-alikes rejected
    directory = export_model(tmp_path / "rule", task.net, SPEC, {"bands": BANDS, "mode": "full"})
    net, _ = load_model(directory)
    assert torch.equal(net(test["image"]), task(test["image"]))


def test_rule_without_nir_uses_green_red_and_needs_both():
    rgb = ["red", "green", "blue"]
    stats = BandStats(tuple(rgb), (0,) * 3, (255,) * 3, (100,) * 3, (50,) * 3)
    task = SpectralRuleTask(EncoderSpec("spectral_rule", None, 3, 32).to_dict(), rgb,
                            stats.to_dict())
    image = (torch.tensor([[[[60.0]], [[120.0]], [[50.0]]]]) - 100) / 50  # red, green, blue
    index, brightness = task.net.features(image)
    assert float(index) == pytest.approx((120 - 60) / 180)
    assert float(brightness) == pytest.approx((60 + 120 + 50) / 3)
    with pytest.raises(InputError, match="spectral_rule: needs green and red bands"):
        SpectralRuleTask(EncoderSpec("spectral_rule", None, 2, 32).to_dict(), ["nir", "blue"],
                         BandStats(("nir", "blue"), (0, 0), (1, 1), (0, 0), (1, 1)).to_dict())
