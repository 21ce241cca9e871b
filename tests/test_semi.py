"""Semi-supervised fine-tuning: EMA teacher, pseudo-labels, guard rails, the CLI paths."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml
from cli import run_command
from torch import nn

from fakes import prepared_dataset
from rts_ssl.models.semi import SemiSupervisedTask, ema_update, pseudo_label_loss, pseudo_labels

RESNET = {"name": "resnet18", "timm_name": "resnet18", "in_chans": 4, "input_size": 32}
CONF = Path(__file__).resolve().parents[1] / "conf"
# conf/semi/mean_teacher.yaml (every method's base: it holds every key) without the ramp-up
SEMI = {**yaml.safe_load((CONF / "semi" / "mean_teacher.yaml").read_text()),
        "rampup_epochs": 0, "confidence": 0.9, "strong": {}}
PIXELDINO = {"prototypes": 8, "teacher_temperature": 0.5, "center_momentum": 0.9}


def test_ema_update_blends_parameters_and_copies_buffers():
    student, teacher = nn.BatchNorm2d(2), nn.BatchNorm2d(2)
    with torch.no_grad():
        student.weight.fill_(1.0)
        teacher.weight.fill_(0.0)
        student.running_mean.fill_(3.0)
    ema_update(student, teacher, momentum=0.9)
    assert torch.allclose(teacher.weight, torch.full((2,), 0.1))
    assert torch.equal(teacher.running_mean, student.running_mean)
    assert torch.equal(student.weight, torch.ones(2))  # the student is not touched


def test_pseudo_labels_only_on_confident_pixels_with_data():
    probs = torch.tensor([[[0.95, 0.02, 0.5, 0.97]]])  # slump, background, unsure, nodata
    target = torch.logit(probs)[:, None]
    logits = torch.tensor([[[[0.3, -0.2, 5.0, -9.0]]]], requires_grad=True)
    valid = torch.tensor([[[True, True, True, False]]])
    slump, background = pseudo_labels(target, valid, confidence=0.9, slump_confidence=0.9)
    assert slump.tolist() == [[[True, False, False, False]]]
    assert background.tolist() == [[[False, True, False, False]]]
    loss = pseudo_label_loss(logits, slump, background)
    expected = F.binary_cross_entropy_with_logits(torch.tensor([0.3, -0.2]),
                                                  torch.tensor([1.0, 0.0]))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert logits.grad[0, 0, 0, 2] == 0 and logits.grad[0, 0, 0, 3] == 0
    unsure = pseudo_label_loss(logits, *pseudo_labels(torch.zeros(1, 1, 1, 4), valid,
                                                      confidence=0.9, slump_confidence=0.9))
    assert unsure.item() == 0 and unsure.requires_grad  # nothing confident: no signal


def test_slump_share_keeps_each_crops_most_probable_pixels_as_slump():
    """Crop 0: five of ten pixels pass the 0.5 bar, a 20 % share keeps its top two (the one
    without data does not count, nor is it kept); crop 1: one slump, under its share."""
    probs = torch.tensor([[[0.9, 0.6, 0.99, 0.7, 0.8, 0.01, 0.02, 0.3, 0.01, 0.97]],
                          [[0.6, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01]]])
    valid = torch.ones(2, 1, 10, dtype=torch.bool)
    valid[0, 0, 2] = False
    slump, background = pseudo_labels(torch.logit(probs)[:, None], valid, confidence=0.95,
                                      slump_confidence=0.5, slump_share=0.2)
    assert slump[0, 0].nonzero().flatten().tolist() == [0, 9]
    assert slump[1, 0].nonzero().flatten().tolist() == [0]
    assert background[0, 0].nonzero().flatten().tolist() == [5, 6, 8]  # 0.6-0.8: no label
    uncapped, _ = pseudo_labels(torch.logit(probs)[:, None], valid, confidence=0.95,
                                slump_confidence=0.5)
    assert uncapped[0, 0].nonzero().flatten().tolist() == [0, 1, 3, 4, 9]


def test_class_balanced_pseudo_labels_weigh_rare_slumps_like_background():
    """One slump pixel at p = 0.6 among nine background ones: below ``confidence`` it is no
    pseudo-label; at ``slump_confidence`` 0.5 it is one, and class balance gives it half the
    loss instead of a tenth."""
    probs = torch.tensor([[[0.6] + [0.01] * 9]])
    target = torch.logit(probs)[:, None]
    logits = torch.zeros(1, 1, 1, 10)
    logits[..., 1:] = -4.0  # the student: right on background, unsure on the slump
    valid = torch.ones(1, 1, 10, dtype=torch.bool)
    unsure_slump, bce_slump = math.log(2), F.softplus(torch.tensor(-4.0)).item()
    strict = pseudo_label_loss(logits, *pseudo_labels(target, valid, 0.9, 0.9))
    assert strict.item() == pytest.approx(bce_slump, rel=1e-5)  # background only
    labels = pseudo_labels(target, valid, confidence=0.9, slump_confidence=0.5)
    plain = pseudo_label_loss(logits, *labels)
    assert plain.item() == pytest.approx((unsure_slump + 9 * bce_slump) / 10, rel=1e-5)
    balanced = pseudo_label_loss(logits, *labels, class_balanced=True)
    assert balanced.item() == pytest.approx((unsure_slump + bce_slump) / 2, rel=1e-5)


@pytest.mark.parametrize(("method", "remedy"), [
    ("mean_teacher", "lower semi.weight"),
    ("fixmatch", "lower semi.slump_confidence"),
    ("pixeldino", "labels alone"),
])
def test_collapse_to_background_warns_and_is_logged(caplog, monkeypatch, method, remedy):
    task = SemiSupervisedTask(RESNET, {**SEMI, **PIXELDINO, "method": method})
    monkeypatch.setattr(task, "rampup", lambda: 1.0)
    logged = {}
    monkeypatch.setattr(task, "log", lambda key, value, **_: logged.__setitem__(key, value))
    monkeypatch.setattr(task, "log_dict", lambda values, **_: logged.update(values))
    background = torch.full((2, 1, 8, 8), -9.0)  # the teacher says "no slump" everywhere
    valid = torch.ones(2, 8, 8, dtype=torch.bool)
    task._watch(background, background, valid, task.pseudo_labels(background, valid))
    assert logged["semi/pseudo_positive"] == 0 and logged["semi/agreement"] == 1
    with caplog.at_level(logging.WARNING):
        task.on_train_epoch_end()
    assert logged["semi/collapsed"] == 1.0 and "collapsed to background" in caplog.text
    assert remedy in caplog.text
    slumps = background.clone()
    slumps[:, :, :2] = 9.0  # a quarter of the pixels: a healthy share
    task._watch(slumps, background, valid, task.pseudo_labels(slumps, valid))
    task.on_train_epoch_end()
    assert logged["semi/collapsed"] == 0.0


def test_the_teacher_is_not_part_of_the_exported_network():
    task = SemiSupervisedTask(RESNET, {**SEMI, **PIXELDINO, "method": "pixeldino"})
    exported = set(task.net.state_dict())
    assert not any(k.startswith(("teacher", "embedding")) for k in exported)
    assert all(not p.requires_grad for p in task.teacher.parameters())
    groups = task.parameter_groups()
    assert any(p is task.embedding.weight for g in groups for p in g["params"])


def test_the_teacher_starts_from_the_loaded_encoder():
    task = SemiSupervisedTask(RESNET, SEMI)
    with torch.no_grad():  # as finetune loads pretrained weights after building the task
        for p in task.net.backbone.parameters():
            p.add_(1.0)
    task.on_train_start()
    student, teacher = task.net.state_dict(), task.teacher.state_dict()
    assert all(torch.equal(student[k], teacher[k]) for k in student)


@pytest.fixture(scope="module")
def fake_data(tmp_path_factory):
    return prepared_dataset(tmp_path_factory.mktemp("fake"))


def config_dir(fake_data):
    """The fake data as labelled data and as unlabelled imagery (also one of other bands)."""
    from test_pretrain import write_data_config

    conf = write_data_config(fake_data)
    (conf / "unlabelled").mkdir(exist_ok=True)
    (conf / "unlabelled" / "fake.yaml").write_text("defaults:\n  - /data/fake@_here_\n")
    (conf / "unlabelled" / "rgb.yaml").write_text(yaml.safe_dump(
        {"defaults": ["/data/fake@_here_", "_self_"], "name": "rgb",
         "bands": ["red", "green", "blue"]}))
    return conf


def finetune(fake_data, logs, *extra):
    from test_finetune import finetune_args

    return run_command("finetune", *finetune_args(config_dir(fake_data), logs, *extra))


def result(logs):
    run = sorted((logs / "finetune").glob("*"))[-1]
    return run, json.loads((run / "result.json").read_text())


@pytest.mark.parametrize(("method", "encoder", "mode"), [
    ("mean_teacher", "resnet18", "full"), ("fixmatch_share", "resnet18", "frozen"),
    ("pixeldino", "resnet18", "full"), ("pixeldino", "vit_tiny", "linear")])
def test_cli_semi_supervised_run_has_finite_loss_terms(fake_data, tmp_path, method, encoder,
                                                       mode):
    done = finetune(fake_data, tmp_path, f"semi={method}", "unlabelled=fake",
                    f"encoder={encoder}", f"mode={mode}")
    assert done.returncode == 0, done.stderr[-3000:]
    run, found = result(tmp_path)
    assert found["semi"] == method and found["unlabelled"] == "fake"
    assert found["pretrained"] == f"random-{encoder}+{method}" and found["mode"] == mode
    curves = pd.read_csv(run / "metrics.csv")
    for key in ("semi/loss_epoch", "train/loss_epoch", "semi/pseudo_positive",
                "semi/agreement"):
        values = curves[key].dropna()
        assert len(values) == 2 and all(math.isfinite(v) for v in values), key
    assert (run / "model" / "model.yaml").is_file()


def test_cli_semi_none_reproduces_supervised_training(fake_data, tmp_path):
    plain = finetune(fake_data, tmp_path / "a", "seed=3")
    ignored = finetune(fake_data, tmp_path / "b", "seed=3", "semi=none", "unlabelled=fake")
    assert plain.returncode == 0 and ignored.returncode == 0, ignored.stderr[-3000:]
    assert "unlabelled=fake is not read: semi=none" in ignored.stdout + ignored.stderr
    (_, a), (_, b) = result(tmp_path / "a"), result(tmp_path / "b")
    metrics = [k for k in a if k.startswith(("test/", "val/"))] + ["threshold"]
    assert len(metrics) > 5 and {k: a[k] for k in metrics} == {k: b[k] for k in metrics}


def test_cli_semi_refuses_other_bands_and_missing_unlabelled(fake_data, tmp_path):
    other = finetune(fake_data, tmp_path, "semi=fixmatch", "unlabelled=rgb")
    assert other.returncode == 2
    assert "unlabelled data rgb has bands red, green, blue but the labelled data has" in \
        other.stderr and "Traceback" not in other.stderr
    missing = finetune(fake_data, tmp_path, "semi=mean_teacher")
    assert missing.returncode == 2 and "needs unlabelled imagery" in missing.stderr
    rule = finetune(fake_data, tmp_path, "semi=mean_teacher", "unlabelled=fake",
                    "encoder=spectral_rule")
    assert rule.returncode == 2 and "use semi=none" in rule.stderr
    unknown = finetune(fake_data, tmp_path, "semi=mean_teacher", "semi.method=meanteacher",
                       "unlabelled=fake")
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
    assert "semi.method: 'meanteacher' is not a semi-supervised method" in unknown.stderr


def test_cli_curve_gains_a_line_per_semi_supervised_method(fake_data, tmp_path):
    from test_curves import finished_cells, sweep_cells

    done = sweep_cells(config_dir(fake_data), tmp_path, "semi=none,fixmatch", "unlabelled=fake",
                       "label_fraction=1.0", "seed=0")
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "curve" / "fake"
    cells = finished_cells(out)
    assert [c for c in cells if "semi=fixmatch" in c] == [cells[0]] and len(cells) == 2
    semi = json.loads((out / "cells" / cells[0] / "result.json").read_text())
    assert semi["semi"] == "fixmatch" and semi["unlabelled"] == "fake"
    assert run_command("curve", f"output={out}", "logger.mode=disabled").returncode == 0
    curve = pd.read_csv(out / "curve.csv")
    assert sorted(curve["pretrained"]) == ["random-resnet18", "random-resnet18+fixmatch"]
