"""Chip folders without georeference: JPEG/PNG images + masks or COCO polygons."""

import json
import logging

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from cli import run_command

from fakes import write_chip
from rts_ssl.data.prepare import prepare_dataset
from rts_ssl.data.rasters import LOCAL_CRS
from rts_ssl.data.scenes import Scene, find_scenes
from rts_ssl.data.tiles import TileStore
from rts_ssl.errors import InputError

RGB = ["red", "green", "blue"]


def make_chips(root, heights=(100, 80), width=120):
    """RGB JPEG chips, each with one bright 20 x 30 px slump at rows 30-50, cols 40-70,
    as JPEG masks (lossy, 0/255) and as a COCO file."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for k, height in enumerate(heights):
        name = f"train_src{k}_{k:03d}.jpg"
        array = rng.integers(40, 90, (3, height, width)).astype(np.uint8)
        array[:, 30:50, 40:70] = 220
        write_chip(root / "images" / name, array)
        mask = np.zeros((1, height, width), np.uint8)
        mask[0, 30:50, 40:70] = 255
        write_chip(root / "masks" / name, mask)
        images.append({"id": k + 1, "file_name": name, "width": width, "height": height})
        annotations.append({"id": k + 1, "image_id": k + 1, "category_id": 1, "iscrowd": 0,
                            "segmentation": [[40, 30, 70, 30, 70, 50, 40, 50]]})
    coco = {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "rts"}]}
    (root / "coco.json").write_text(json.dumps(coco))
    return {"name": "chips", "sensor": None, "bands": RGB, "band_names": RGB,
            "scenes": str(root / "images"), "pixel_size_m": 3.0, "id_column": "image_id",
            "pattern": r"train_(?P<region>[a-z0-9]+)_\d+\.jpg$",
            "tiles": {"size": 96, "overlap": 0, "max_nodata_fraction": 0.5,
                      "location_block_m": 1000}}


def test_chip_scene_has_a_local_metric_grid(tmp_path):
    data = make_chips(tmp_path)
    paths = find_scenes(data["scenes"])
    assert [p.suffix for p in paths] == [".jpg", ".jpg"]
    with Scene(paths[0], ["blue", "red"], band_names=RGB, pixel_size_m=3.0) as scene:
        assert scene.crs == LOCAL_CRS and scene.transform.a == 3.0
        assert tuple(scene.bounds) == (0.0, 0.0, 360.0, 300.0)
        values, nodata = scene.read()
        assert values.shape == (2, 100, 120) and not nodata.any()
        assert abs(int(values[1, 40, 50]) - 220) < 10  # red of the bright slump


def test_missing_pixel_size_is_a_one_line_error(tmp_path):
    data = make_chips(tmp_path)
    with pytest.raises(InputError, match=r"train_src0_000\.jpg: has no georeference .*"
                                         r"set data\.pixel_size_m"):
        Scene(find_scenes(data["scenes"])[0], RGB, band_names=RGB)
    with pytest.raises(InputError, match=r"coco\.json: COCO polygons are in pixels: set "
                                         r"data\.pixel_size_m"):
        prepare_dataset({**data, "labels": str(tmp_path / "coco.json"),
                         "pixel_size_m": None}, tmp_path / "out")
    done = run_command("prepare", "data=rgb_chips",
                           f"data.root={tmp_path}", "data.sources=null", "data.pixel_size_m=null",
                           f"data.labels={tmp_path / 'coco.json'}",
                           f"data.prepared={tmp_path / 'cli'}")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "set data.pixel_size_m" in done.stderr


@pytest.mark.parametrize("labels", ["masks", "coco"])
def test_chips_prepare_like_scenes_from_masks_or_coco(tmp_path, labels):
    data = make_chips(tmp_path)
    if labels == "masks":
        data |= {"masks": str(tmp_path / "masks"), "mask_threshold": 127}
    else:
        data |= {"labels": str(tmp_path / "coco.json")}
    summary = prepare_dataset(data, tmp_path / "out")
    store = TileStore(tmp_path / "out")
    tiles = store.tiles.sort_values("tile_id")
    assert summary.tiles == len(tiles) == 6  # rows 0, 4 (100 px) or 0 (80 px) x cols 0, 24
    assert set(tiles["region"]) == {"src0", "src1"}
    assert tiles["place"].nunique() == 2  # every chip its own place, though both sit at 0, 0
    first = tiles[tiles["tile_id"] == "train_src0_000/0_0"].iloc[0]
    assert first["crs"] == LOCAL_CRS.to_string()
    assert (first["maxx"] - first["minx"], first["maxy"] - first["miny"]) == (288.0, 288.0)
    _, masks = store.read(int(first.name))
    assert masks[0, 30:50, 40:70].all() and masks[0].sum() == 600  # the 20 x 30 px slump
    # the 80 px chip is padded to the 96 px tile with nodata, which is ignored
    short = tiles[tiles["tile_id"] == "train_src1_001/0_0"].iloc[0]
    assert short["nodata_fraction"] == pytest.approx(16 / 96)
    _, masks = store.read(int(short.name))
    assert masks[2, 80:].all() and masks[1, 80:].all() and not masks[2, :80].any()


def test_pooled_sources_with_their_own_pixel_size(tmp_path, caplog):
    data = make_chips(tmp_path)
    data |= {"labels": str(tmp_path / "coco.json"), "sources": [
        {"scenes": str(tmp_path / "images" / "*_src0_*.jpg"), "pixel_size_m": 3.0},
        {"scenes": str(tmp_path / "images" / "*_src1_*.jpg"), "pixel_size_m": 4.0}]}
    with caplog.at_level(logging.WARNING):
        prepare_dataset(data, tmp_path / "out")
    # the shared label file's polygons are all used, each by one source
    assert "touch no scene" not in caplog.text
    coco = json.loads((tmp_path / "coco.json").read_text())
    coco["annotations"].append({"id": 3, "image_id": 1, "category_id": 1, "iscrowd": 0,
                                "segmentation": [[500, 30, 530, 30, 530, 50, 500, 50]]})
    (tmp_path / "coco.json").write_text(json.dumps(coco))  # one polygon beside its chip
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        prepare_dataset(data, tmp_path / "again")
    assert "coco.json: 1 of 3 polygons touch no scene and are not used" in caplog.text
    store = TileStore(tmp_path / "out")
    width = (store.tiles["maxx"] - store.tiles["minx"]).groupby(store.tiles["region"]).first()
    assert width.to_dict() == {"src0": 288.0, "src1": 384.0}
    # each source's polygons land on its own chips at its pixel size: every tile holds the
    # whole 20 x 30 px slump
    assert [int(store.read(i)[1][0].sum()) for i in range(len(store))] == [600] * 6


def _export_rgb_model(tmp_path):
    import torch

    from rts_ssl.data.normalization import BandStats
    from rts_ssl.models.encoders import EncoderSpec
    from rts_ssl.models.export import export_model
    from rts_ssl.models.segmentation import build_segmentation

    spec = EncoderSpec("resnet18", "resnet18", 3, 64)
    net = build_segmentation(spec, "full")
    head = net.unet.segmentation_head[0]
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.constant_(head.bias, 10.0)  # says "slump" everywhere
    stats = BandStats(tuple(RGB), (0,) * 3, (255,) * 3, (100,) * 3, (50,) * 3)
    return export_model(tmp_path / "model", net, spec, {
        "bands": RGB, "normalization": stats.to_dict(), "threshold": 0.5, "input_size": 64,
        "mode": "full"})


def test_predict_and_evaluate_chips_on_their_local_grid(tmp_path):
    make_chips(tmp_path)
    model = _export_rgb_model(tmp_path)
    common = [f"model={model}", f"input={tmp_path / 'images'}", "band_names=[red,green,blue]",
              "window=64", "overlap=16"]
    done = run_command("predict", *common,
                           f"output={tmp_path / 'pred'}", "pixel_size_m=3")
    assert done.returncode == 0, done.stderr[-2000:]
    with rasterio.open(tmp_path / "pred" / "train_src0_000_probability.tif") as src:
        assert src.crs == LOCAL_CRS and src.transform.a == 3.0 and src.shape == (100, 120)
        assert (src.read(1) == 254).all()
    slumps = gpd.read_file(tmp_path / "pred" / "train_src0_000_slumps.gpkg")
    assert slumps["area_m2"].sum() == pytest.approx(100 * 120 * 9)
    deprecated = [a.replace("band_names=", "bands=").replace("model=", "checkpoint=")
                  for a in common]  # the old names work
    missing = run_command("predict", *deprecated,
                              f"output={tmp_path / 'p2'}")
    assert "bands= is deprecated: the same is band_names=" in missing.stderr + missing.stdout
    assert "checkpoint= is deprecated: the same is model=" in missing.stderr
    assert "set data.pixel_size_m" in missing.stderr + missing.stdout
    for option, reference, extra in (("masks", tmp_path / "coco.json", []),
                                     ("mask", tmp_path / "masks", ["mask_threshold=127"])):
        done = run_command("evaluate", *common, "pixel_size_m=3", f"{option}={reference}",
                           *extra, f"output={tmp_path / 'metrics.json'}")
        assert done.returncode == 0, done.stderr[-2000:]
        assert ("mask= is deprecated: the same is masks=" in done.stderr) == (option == "mask")
        pooled = json.loads((tmp_path / "metrics.json").read_text())["pooled"]
        assert pooled["recall"] == pytest.approx(1.0)
        assert pooled["precision"] == pytest.approx(1200 / (100 * 120 + 80 * 120), rel=1e-3)
