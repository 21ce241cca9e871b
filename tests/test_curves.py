import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from cli import run_command

from rts_ssl.data.splits import FOLD
from rts_ssl.errors import InputError
from rts_ssl.evaluation.curves import (
    aggregate,
    area_under_curve,
    collect_results,
    evaluated_on,
    missing_cells,
    plot_curves,
    rank_checkpoints,
    t95,
)


def results_table() -> pd.DataFrame:
    rows = []
    for name, level in (("simclr", 0.5), ("random", 0.3)):
        for fraction in (0.01, 0.1, 1.0):
            for seed in range(3):
                value = level + 0.1 * np.log10(fraction) + 0.01 * (seed - 1)
                rows.append({"pretrained": name, "label_fraction": fraction, "seed": seed,
                             "test/iou": value, "test/f1": value, "test/object_f1": value})
    return pd.DataFrame(rows)


def test_mean_and_t_confidence_interval_over_seeds():
    curve = aggregate(results_table())
    row = curve[(curve["pretrained"] == "simclr") & (curve["label_fraction"] == 0.1)].iloc[0]
    assert row["seeds"] == 3 and row["iou_mean"] == pytest.approx(0.4)
    assert row["iou_std"] == pytest.approx(0.01)
    assert row["iou_ci95"] == pytest.approx(4.303 * 0.01 / np.sqrt(3))
    assert t95(1) == 12.706 and t95(100) == 1.96


def test_area_under_log_fraction_curve_and_ranking(tmp_path):
    curve = aggregate(results_table())
    areas = area_under_curve(curve)
    # linear in log10 fraction from level-0.2 to level: mean = level - 0.1
    assert areas["simclr"] == pytest.approx(0.4) and areas["random"] == pytest.approx(0.2)
    ranked = rank_checkpoints(curve)
    assert ranked["pretrained"].tolist() == ["simclr", "random"]
    assert ranked.loc[0, "iou@0.01"] == pytest.approx(0.3)
    assert plot_curves(curve, tmp_path / "c.png", "held out: yg").stat().st_size > 1000


def test_axis_labels_name_what_the_cells_were_tested_on(tmp_path, monkeypatch):
    """A grid that holds no region out (``split.test_regions=[]``, fold key "") must not be
    labelled as tested on held-out regions."""
    assert evaluated_on(["nitze", "yg", "nitze"]) == "held out: nitze, yg"
    assert evaluated_on(["taymyr,alaska_north"]) == "held out: alaska_north, taymyr"
    assert evaluated_on(["", ""]) == evaluated_on([]) == "tiles within the training regions"
    labels = []
    monkeypatch.setattr("matplotlib.axes.Axes.set_ylabel",
                        lambda ax, text, *a, **k: labels.append(text))
    plot_curves(aggregate(results_table()), tmp_path / "c.png", evaluated_on([""]))
    assert labels == ["test iou (tiles within the training regions)",
                      "test object f1 (tiles within the training regions)"]


def test_collect_results(tmp_path):
    for k, row in results_table().head(4).iterrows():
        (tmp_path / str(k)).mkdir()
        (tmp_path / str(k) / "result.json").write_text(json.dumps(row.to_dict()))
    assert len(collect_results(tmp_path)) == 4
    with pytest.raises(InputError, match="no finished fine-tuning runs"):
        collect_results(tmp_path / "0" / "nothing")


def test_earlier_cells_join_the_cells_found_which_win(tmp_path):
    """Committed rows of cells that ran elsewhere are aggregated beside those that ran here;
    a cell in both counts once, as it ran here."""
    table = results_table().assign(label_count=None, test_regions="yg")
    for k, row in table.head(4).iterrows():  # simclr, 1 %, seeds 0-2; 10 %, seed 0
        (tmp_path / "cells" / str(k)).mkdir(parents=True)
        (tmp_path / "cells" / str(k) / "result.json").write_text(json.dumps(row.to_dict()))
    earlier = table.head(6).assign(**{"test/iou": 7.0})  # two of them not found here
    earlier.to_csv(tmp_path / "cells.csv", index=False)
    rows = collect_results(tmp_path / "cells", tmp_path / "cells.csv")
    assert len(rows) == 6
    assert (rows["test/iou"] == 7.0).tolist() == [False] * 4 + [True] * 2
    assert rows["seed"].tolist() == [0, 1, 2, 0, 1, 2]
    only_earlier = collect_results(tmp_path / "nothing", tmp_path / "cells.csv")
    assert len(only_earlier) == 6
    done = run_command("curve", f"output={tmp_path / 'elsewhere'}", "logger.mode=disabled",
                       f"earlier_cells={tmp_path / 'cells.csv'}")  # no cell ran here
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(pd.read_csv(tmp_path / "elsewhere" / "cells.csv")) == 6
    with pytest.raises(InputError, match="no such cells.csv"):
        collect_results(tmp_path / "cells", tmp_path / "gone.csv")
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="not a curve's cells.csv: no column label_fraction"):
        collect_results(tmp_path / "cells", tmp_path / "other.csv")


@pytest.fixture(scope="module")
def fake_data(tmp_path_factory):
    from fakes import prepared_dataset

    return prepared_dataset(tmp_path_factory.mktemp("fake"))


def sweep_cells(conf_dir, logs, *grid: str) -> subprocess.CompletedProcess:
    """``finetune -m`` over tiny cells of the fake data: a curve's grid, each cell in
    ``<logs>/curve/fake/cells/<its overrides>``."""
    from test_finetune import finetune_args

    return subprocess.run([sys.executable, "-m", "rts_ssl", "finetune", "-m",
                           *finetune_args(conf_dir, logs, "trainer.max_epochs=1", *grid)],
                          capture_output=True, text=True)


def finished_cells(curve_dir) -> list[str]:
    """The folder names of every cell with a result, sorted."""
    return sorted(p.parent.name for p in curve_dir.glob("cells/*/result.json"))


def test_cli_cells_resume_and_curve_and_compare_rank_them(fake_data, tmp_path):
    from test_files import held_by_another_process
    from test_pretrain import write_data_config

    from rts_ssl.files import LOCK

    conf = write_data_config(fake_data)
    out = tmp_path / "curve" / "fake"
    cells = [f"batch_size=4,data=fake,input_size=32,label_fraction={f},pretrained=none,"
             "samples_per_epoch=8,seed=0,split.test_regions=[east],split.val_fraction=0.5,"
             "trainer.max_epochs=1" for f in ("0.5", "1.0")]
    with held_by_another_process(out / "cells" / cells[0] / LOCK) as holder:  # a second sweep's
        first = sweep_cells(conf, tmp_path, "pretrained=none", "label_fraction=0.5,1.0",
                            "seed=0")
    assert first.returncode == 0, first.stderr[-3000:]
    assert f"is being run by process {holder.pid}" in first.stderr + first.stdout
    assert finished_cells(out) == cells[1:]  # the held cell skipped, the sweep went on
    stamp = (out / "cells" / cells[1] / "result.json").stat().st_mtime_ns
    again = sweep_cells(conf, tmp_path, "pretrained=none", "label_fraction=0.5,1.0", "seed=0",
                        f"output={out}")  # where cells land is not part of their names
    assert again.returncode == 0 and "already done" in again.stderr + again.stdout
    assert finished_cells(out) == cells  # the killed holder's lock blocked nothing
    assert (out / "cells" / cells[1] / "result.json").stat().st_mtime_ns == stamp
    done = run_command("curve", f"output={out}", "logger.mode=disabled")
    assert done.returncode == 0, done.stderr[-3000:]
    curve = pd.read_csv(out / "curve.csv")
    assert curve["label_fraction"].tolist() == [0.5, 1.0]
    assert set(curve["pretrained"]) == {"random-resnet18"} and (out / "curve.png").is_file()
    ranked = run_command("compare", str(out))
    assert ranked.returncode == 0 and "random-resnet18" in ranked.stdout
    assert "auc_iou" in ranked.stdout


def test_results_from_a_wandb_group(monkeypatch):
    import wandb

    from rts_ssl import tracking

    class Run:
        def __init__(self, row, state="finished"):
            self.config = {k: row[k] for k in ("pretrained", "label_fraction", "seed")}
            self.summary = {k: row[k] for k in ("test/iou", "test/f1", "test/object_f1")}
            self.state = state

    class Api:
        def runs(self, path, filters):
            assert path == "me/rts_ssl" and filters == {"group": "g", "jobType": "finetune"}
            rows = results_table().to_dict("records")
            return [Run(r) for r in rows] + [Run(rows[0], state="crashed")]

    monkeypatch.setattr(wandb, "Api", Api)
    results = tracking.finetune_results("me/rts_ssl/g")
    assert len(results) == len(results_table())
    assert area_under_curve(aggregate(results))["simclr"] == pytest.approx(0.4)


def test_folds_are_averaged_per_seed_and_areas_get_intervals():
    rows = []
    for fold, shift in (("north", 0.1), ("south", -0.1)):
        for fraction in (0.1, 1.0):
            for seed in range(3):
                value = 0.5 + shift + 0.1 * np.log10(fraction) + 0.01 * seed
                rows.append({"pretrained": "a", "label_fraction": fraction, "seed": seed,
                             "test_regions": fold, "test/iou": value})
    curve = aggregate(pd.DataFrame(rows))
    at_one = curve[curve["label_fraction"] == 1.0].iloc[0]
    assert at_one["folds"] == 2 and at_one["seeds"] == 3
    assert at_one["iou_mean"] == pytest.approx(0.51)  # folds cancel; seeds 0, .01, .02
    assert at_one["iou_std"] == pytest.approx(0.01)  # spread over seeds, not folds
    # per seed: area = mean of 0.4 + s and 0.5 + s; mean over seeds 0.46, std 0.01
    assert curve["auc_iou"].iloc[0] == pytest.approx(0.46)
    assert curve["auc_iou_ci95"].iloc[0] == pytest.approx(4.303 * 0.01 / np.sqrt(3))
    assert rank_checkpoints(curve).loc[0, "auc_iou_ci95"] == pytest.approx(
        4.303 * 0.01 / np.sqrt(3))


def paired_table() -> pd.DataFrame:
    """Lines whose seeds move together by 0.05 (a seed's split and labels suit every line
    alike): SimCLR is 0.01 / 0.02 / 0.03 above random init of its encoder in seeds 0 / 1 / 2,
    its semi-supervised variant the same above random init with the same method."""
    lines = (("simclr-resnet18", "simclr", "resnet18", "none", 0.02),
             ("random-resnet18", "none", "resnet18", "none", 0.0),
             ("simclr-resnet18+mean_teacher", "simclr", "resnet18", "mean_teacher", 0.12),
             ("random-resnet18+mean_teacher", "none", "resnet18", "mean_teacher", 0.1),
             ("mae-vit_tiny", "mae", "vit_tiny", "none", 0.05),  # no random ViT: no pair
             ("spectral_rule", "none", "spectral_rule", "none", 0.01))
    rows = []
    for name, ssl, encoder, semi, gain in lines:
        for fraction in (0.01, 1.0):
            for seed in range(3):
                value = 0.3 + gain + 0.05 * seed + (0.01 * (seed - 1) if ssl != "none" else 0)
                rows.append({"pretrained": name, "ssl": ssl, "encoder": encoder, "semi": semi,
                             "label_fraction": fraction, "seed": seed, "test/iou": value,
                             "model": ""})
    return pd.DataFrame(rows)


def test_pretrained_lines_get_their_gain_over_random_init_paired_by_seed():
    curve = aggregate(paired_table()).groupby("pretrained").first()
    ci = 4.303 * 0.01 / np.sqrt(3)  # the differences' spread, not the seeds' 0.05
    assert curve.loc["simclr-resnet18", "auc_iou_gain_over"] == "random-resnet18"
    assert curve.loc["simclr-resnet18", "auc_iou_gain"] == pytest.approx(0.02)
    assert curve.loc["simclr-resnet18", "auc_iou_gain_ci95"] == pytest.approx(ci)
    assert curve.loc["simclr-resnet18", "auc_iou_ci95"] > 5 * ci  # unpaired: wide
    semi = curve.loc["simclr-resnet18+mean_teacher"]
    assert semi["auc_iou_gain_over"] == "random-resnet18+mean_teacher"
    assert semi["auc_iou_gain"] == pytest.approx(0.02)
    unpaired = ["random-resnet18", "random-resnet18+mean_teacher", "mae-vit_tiny",
                "spectral_rule"]
    assert curve.loc[unpaired, "auc_iou_gain"].isna().all()
    ranked = rank_checkpoints(aggregate(paired_table()))
    assert ranked.set_index("pretrained").loc["simclr-resnet18", "auc_iou_gain"] == \
        pytest.approx(0.02)
    # results without ssl / encoder (a W&B group's runs): no gain columns, no error
    assert "auc_iou_gain" not in aggregate(results_table())


def test_cli_curve_logs_the_paired_gains(tmp_path):

    for k, row in paired_table().iterrows():
        (tmp_path / "cells" / str(k)).mkdir(parents=True)
        (tmp_path / "cells" / str(k) / "result.json").write_text(json.dumps(row.to_dict()))
    done = run_command("curve", f"output={tmp_path}", "logger.mode=disabled")
    assert done.returncode == 0, done.stderr[-3000:]
    assert ("simclr-resnet18                          minus random-resnet18, paired by seed: "
            "+0.020 +- 0.025") in done.stderr
    assert pd.read_csv(tmp_path / "curve.csv")["auc_iou_gain"].notna().sum() == 4


def test_cli_curve_of_entries_and_folds_and_a_selection(fake_data, tmp_path):
    from test_pretrain import write_data_config

    done = sweep_cells(write_data_config(fake_data), tmp_path, "entry=spectral_rule",
                       "split.test_regions=[east],[west]", "label_fraction=1.0", "seed=0,1")
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "curve" / "fake"
    assert len(finished_cells(out)) == 4
    assert run_command("curve", f"output={out}", "logger.mode=disabled").returncode == 0
    curve = pd.read_csv(out / "curve.csv")
    assert curve[["pretrained", "folds", "seeds"]].values.tolist() == [["spectral_rule", 2, 2]]
    rows = pd.read_csv(out / "cells.csv")  # the data behind the curve, a row per cell
    assert rows[["test_regions", "seed"]].values.tolist() == [
        ["east", 0], ["east", 1], ["west", 0], ["west", 1]]
    assert rows["test/iou"].mean() == pytest.approx(curve.loc[0, "iou_mean"])
    assert {"precision_mean", "object_fp_per_100km2_mean", "auc_iou_ci95"} <= set(curve)
    # the same test sets for every line: the reference "every pixel a slump" beside them
    assert 0 < curve.loc[0, "slump_fraction_mean"] < 0.5
    assert rows.groupby("test_regions")["test/slump_fraction"].nunique().max() == 1
    # a part of the cells in the same folder: the others stay out of the curve
    part = run_command("curve", f"output={out}", "logger.mode=disabled", "folds=[[east]]",
                       "seeds=[0,2]", "lines=[spectral_rule]")
    assert part.returncode == 0, part.stderr[-3000:]
    assert ("left out of the curve: 1, e.g. pretrained=spectral_rule test_regions=east "
            "seed=2") in part.stderr  # seed 2 was never run: said, not silently averaged
    assert pd.read_csv(out / "cells.csv")[["test_regions", "seed"]].values.tolist() == [
        ["east", 0]]
    assert pd.read_csv(out / "curve.csv")[["folds", "seeds"]].values.tolist() == [[1, 1]]
    nothing = run_command("curve", f"output={out}", "logger.mode=disabled", "lines=[other]")
    assert nothing.returncode == 2 and "no finished cell matches" in nothing.stderr


def test_missing_cells_are_the_selected_combinations_without_a_result():
    results = pd.DataFrame({"pretrained": ["a", "a", "b"], FOLD: ["x", "y", "x"],
                            "label_fraction": [0.1, 0.1, 0.1], "seed": [0, 0, 0]})
    selection = {"pretrained": ["a", "b"], FOLD: ["x", "y"], "seed": [0, 1]}
    assert missing_cells(results, selection) == [
        {"pretrained": "a", FOLD: "x", "seed": 1}, {"pretrained": "a", FOLD: "y", "seed": 1},
        {"pretrained": "b", FOLD: "x", "seed": 1}, {"pretrained": "b", FOLD: "y", "seed": 0},
        {"pretrained": "b", FOLD: "y", "seed": 1}]
    assert missing_cells(results.iloc[:2], {"pretrained": ["a"], FOLD: ["x", "y"]}) == []
    assert missing_cells(results, {}) == []  # no selection: every cell found is the curve


def test_curve_selects_the_cells_of_an_experiment_grid():
    from omegaconf import OmegaConf

    from rts_ssl.commands.curve import cell_selection

    cfg = OmegaConf.create({"lines": None, "folds": None, "fractions": None, "seeds": [1],
                            "grid": {"entry": "a,b", "semi": "none,fixmatch", "seed": "0,1,2",
                                     "split.test_regions": "[x],[y,z]", "label_fraction": "0.1"}})
    assert cell_selection(cfg) == {"pretrained": ["a", "a+fixmatch", "b", "b+fixmatch"],
                                   "test_regions": ["x", "y,z"], "label_fraction": [0.1],
                                   "seed": [1]}
    cfg.grid = None
    assert cell_selection(cfg) == {"seed": [1]}
