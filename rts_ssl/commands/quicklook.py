"""``python -m rts_ssl quicklook [scene=<tif>] [labels=<file>] [output=<png>]``."""

import logging

from omegaconf import DictConfig, OmegaConf

from rts_ssl.commands import hydra_main
from rts_ssl.data.labels import LabelIndex, read_polygons
from rts_ssl.data.prepare import resolve_source
from rts_ssl.data.scenes import Scene, find_scenes, scene_options
from rts_ssl.quicklook import render_quicklook

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> None:
    data = OmegaConf.to_container(cfg.data, resolve=True)
    if not cfg.scene:  # the data config's first scene (synthetic scenes generated if needed)
        data = resolve_source(data)
    scene_path = find_scenes(cfg.scene or data["scenes"])[0]
    # a given scene: the given labels only; else the data config's own (and their layer)
    labels = cfg.labels or (None if cfg.scene else data.get("labels"))
    layer = cfg.labels_layer or (None if cfg.labels else data.get("labels_layer"))
    polygons = None
    if labels:
        index = LabelIndex(read_polygons(labels, layer, data.get("pixel_size_m"),
                                         layer_option="labels_layer"))
        with Scene(scene_path, data["bands"], **scene_options(data)) as scene:
            polygons, _ = index.for_scene(scene.path.stem, tuple(scene.bounds), scene.crs)
    out = render_quicklook(scene_path, cfg.output, polygons, scene_options(data))
    log.info("quicklook of %s with %d polygons -> %s", scene_path,
             0 if polygons is None else len(polygons), out)


if __name__ == "__main__":
    hydra_main("quicklook")
