"""Every command over a table of bad inputs: one line, the documented exit code, no traceback
and no new files beside the intended outputs (README: exit codes)."""

from __future__ import annotations

import errno
import logging
from pathlib import Path

import pytest
import yaml
from cli import run_command
from test_predict import export, scene_with_border

from fakes import texture_scene, write_geotiff
from rts_ssl.commands import compose, execute


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    made = {"model": export(root), "scene": scene_with_border(root / "scene.tif", size=200)}
    made["truncated"] = root / "truncated.tif"
    made["truncated"].write_bytes(made["scene"].read_bytes()[:3000])
    made["text"] = root / "notes.tif"
    made["text"].write_text("not an image")
    made["empty_file"] = root / "empty.gpkg"
    made["empty_file"].write_bytes(b"")
    made["empty_dir"] = root / "nothing"
    made["empty_dir"].mkdir()
    made["three_bands"] = write_geotiff(root / "three.tif", texture_scene(3, 64),
                                        descriptions=("blue", "green", "red"))
    made["no_crs"] = write_geotiff(root / "nocrs.tif", texture_scene(4, 64), crs=None)
    made["a_file"] = root / "a_file"
    made["a_file"].write_text("x")
    made["missing"] = root / "missing.tif"
    conf = root / "conf" / "data"
    conf.mkdir(parents=True)
    (conf / "missing_scenes.yaml").write_text(yaml.safe_dump({
        "defaults": ["synthetic_planet", "_self_"], "name": "missing_scenes",
        "synthetic": None, "root": str(root), "scenes": str(root / "no_such_folder"),
        "labels": None, "prepared": str(root / "prepared")}))
    (conf / "unresolvable.yaml").write_text(yaml.safe_dump({  # root needs synthetic.seed
        "defaults": ["synthetic_planet", "_self_"], "name": "unresolvable", "synthetic": None}))
    made["conf"] = root / "conf"
    made["unwritable"] = _unwritable_folder(root)
    return made


def _unwritable_folder(root: Path) -> Path | None:
    """A folder this process may not write into: read-only for users, /sys for root."""
    folder = root / "read_only"
    folder.mkdir()
    folder.chmod(0o500)
    for candidate in (folder, Path("/sys")):
        try:
            (candidate / "probe").mkdir()
        except OSError:
            return candidate
        (candidate / "probe").rmdir()
    return None


# (command, arguments with {placeholders} of `files`, exit code, words of the last line)
CASES = [
    ("predict", ["model={missing}", "input={scene}", "output={out}"], 2, "no model.yaml"),
    ("predict", ["model={model}", "input={missing}", "output={out}"], 2, "missing.tif"),
    ("predict", ["model={model}", "input={empty_dir}", "output={out}"], 2, "nothing"),
    ("predict", ["model={model}", "input={truncated}", "output={out}"], 2, "truncated.tif"),
    ("predict", ["model={model}", "input={text}", "output={out}"], 2, "notes.tif"),
    ("predict", ["model={model}", "input={three_bands}", "output={out}"], 2, "band nir"),
    ("predict", ["model={model}", "input={no_crs}", "output={out}"], 2, "georeference"),
    ("predict", ["model={model}", "input={scene}", "output={a_file}"], 2,
     "not a directory"),
    ("evaluate", ["model={model}", "input={scene}", "masks={missing}", "output={out}"], 2,
     "missing.tif"),
    ("evaluate", ["model={model}", "input={scene}", "masks={empty_file}",
                  "output={out}"], 2, "empty.gpkg"),
    ("monitor", ["model={model}", "input={scene}", "output={out}"], 2, "no date"),
    ("finetune", ["pretrained={missing}"], 2, "missing.tif"),
    ("prepare", ["hydra.searchpath=[file://{conf}]", "data=missing_scenes"], 2, "no_such_folder"),
    ("prepare", ["hydra.searchpath=[file://{conf}]", "data=unresolvable"], 2, "data.root"),
    ("pretrain", ["hydra.searchpath=[file://{conf}]", "data=missing_scenes"], 2, "no_such_folder"),
    ("curve", ["pretrained=[{missing}]"], 2, "curve only aggregates now"),
    ("curve", ["output={empty_dir}"], 2, "no finished fine-tuning runs"),
    ("curve", ["output={empty_dir}", "earlier_cells={missing}"], 2, "no such cells.csv"),
    ("compare", ["{empty_dir}"], 2, "no curve.csv"),
    ("bench", ["nope"], 2, "unknown benchmark"),
    ("quicklook", ["scene={missing}", "output={out}"], 2, "missing.tif"),
    # config values out of range: refused before any work
    ("finetune", ["batch_size=0"], 2, "batch_size: 0 is not a positive integer"),
    ("finetune", ["split.val_fraction=1.5"], 2, "split.val_fraction"),
    ("finetune", ["head.encoder_frozen_epochs=-1"], 2,
     "head.encoder_frozen_epochs: -1 is not an integer >= 0"),
    ("pretrain", ["trainer.max_epochs=0"], 2, "trainer.max_epochs"),
    ("curve", ["fractions=[0.1,2.0]"], 2, "fractions"),
    ("predict", ["model={model}", "input={scene}", "output={out}", "overlap=300",
                 "window=256"], 2, "overlap: 300 must be smaller than window (256)"),
    ("predict", ["model={model}", "input={scene}", "output={out}", "threshold=1.5"], 2,
     "threshold: 1.5 is not a probability in (0, 1] or null"),
    ("evaluate", ["model={model}", "input={scene}", "masks={scene}", "output={out}",
                  "thresholds=[0.5,0]"], 2, "thresholds: [0.5, 0] is not a list of probabilities"),
    ("volume", ["dem_before={missing}", "dem_after={scene}", "polygons={empty_file}",
                "output={out}"], 2, "missing.tif"),
    # outputs where this user may not write
    ("predict", ["model={model}", "input={scene}", "output={unwritable}/maps"], 2,
     "/maps: "),
    ("evaluate", ["model={model}", "input={scene}", "masks={scene}",
                  "output={unwritable}/metrics/m.json"], 2, "/metrics: "),
    ("quicklook", ["scene={scene}", "output={unwritable}/q.png"], 2, "/q.png: "),
]


@pytest.mark.parametrize(("command", "arguments", "code", "words"), CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_bad_input_gives_one_line_and_its_exit_code(files, tmp_path, monkeypatch, command,
                                                    arguments, code, words):
    if "{unwritable}" in " ".join(arguments) and files["unwritable"] is None:
        pytest.skip("no folder here that this user may not write")
    values = {k: str(v) for k, v in files.items()} | {"out": str(tmp_path / "out")}
    before = set(files["scene"].parent.rglob("*"))
    monkeypatch.setenv("WANDB_MODE", "disabled")
    done = run_command(command, *(a.format(**values) for a in arguments),
                       f"paths.log_dir={tmp_path / 'logs'}",
                       f"paths.cache_dir={tmp_path / 'cache'}",
                       f"paths.data_dir={tmp_path / 'data'}")
    last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
    assert done.returncode == code, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and last.startswith("error: ") and words in last
    assert set(files["scene"].parent.rglob("*")) == before  # nothing new beside the inputs
    outputs = tmp_path / "out"
    leftovers = [p for p in outputs.rglob("*") if p.is_file()] if outputs.is_dir() else []
    assert not leftovers, leftovers


@pytest.mark.parametrize("mode", ["RUN", "MULTIRUN"])
@pytest.mark.parametrize("error", [ZeroDivisionError("a bug, not the user's input"),
                                   OSError(errno.ENOTEMPTY, "Directory not empty")],
                         ids=["bug", "oserror_not_a_filesystem_refusal"])
def test_an_unexpected_failure_of_a_sweeps_job_is_logged_as_it_happens(tmp_path, monkeypatch,
                                                                        caplog, mode, error):
    """Hydra records a sweep job's exception, goes on with the next job and raises only the
    first, at the end: hours later, and without the others. A single run raises it at once."""
    import rts_ssl.commands.evaluate

    def bug(cfg):
        raise error

    monkeypatch.setattr(rts_ssl.commands.evaluate, "run", bug)
    cfg = compose("evaluate", [f"hydra.run.dir={tmp_path}", f"hydra.mode={mode}"])
    with pytest.raises(type(error)), caplog.at_level(logging.ERROR):
        execute("evaluate", cfg)
    logged = [r for r in caplog.records if r.exc_info and r.exc_info[1] is error]
    assert len(logged) == (mode == "MULTIRUN")
