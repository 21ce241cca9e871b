import numpy as np
import pytest
import torch

from rts_ssl.data.vectorise import mask_objects
from rts_ssl.evaluation.metrics import ObjectCounts, match_objects, pixel_metrics, with_ignore


def square(mask, row, col, size):
    mask[row:row + size, col:col + size] = 1
    return mask


def test_pixel_metrics_respect_ignore():
    target = torch.zeros(1, 10, 10, dtype=torch.long)
    target[0, :, :5] = 1  # 50 slump pixels
    pred = torch.zeros(1, 10, 10)
    pred[0, :, :4] = 1  # 40 right
    pred[0, :, 9] = 1  # 10 false positives...
    ignore = torch.zeros(1, 10, 10, dtype=torch.bool)
    ignore[0, :, 9] = True  # ...in ignored pixels
    metrics = pixel_metrics()
    metrics.update(pred, with_ignore(target, ignore))
    result = {k: float(v) for k, v in metrics.compute().items()}
    assert result["precision"] == pytest.approx(1.0)
    assert result["recall"] == pytest.approx(0.8)
    assert result["iou"] == pytest.approx(0.8)
    assert result["f1"] == pytest.approx(2 * 0.8 / 1.8)


def test_objects_are_8_connected_and_matched_one_to_one():
    mask = np.zeros((20, 20), np.uint8)
    mask[2, 2] = mask[3, 3] = 1  # diagonal neighbours: one object
    square(mask, 10, 10, 4)
    assert len(mask_objects(mask)) == 2
    reference = [shapely_box(0, 0, 10, 10)]
    predicted = [shapely_box(0, 0, 10, 10), shapely_box(1, 1, 10, 10)]
    matches = match_objects(predicted, reference, 0.3)
    assert matches == [(0, 0, 1.0)]  # the best one only


def shapely_box(*bounds):
    import shapely

    return shapely.box(*bounds)


def test_object_counts_precision_recall_and_false_positive_density():
    reference = square(square(np.zeros((100, 100), np.uint8), 10, 10, 10), 50, 50, 10)
    predicted = square(square(np.zeros((100, 100), np.uint8), 12, 12, 10), 80, 80, 5)
    predicted = square(predicted, 0, 95, 5)  # a prediction in nodata: not an object
    valid = np.ones((100, 100), bool)
    valid[:, 95:] = False
    counts = ObjectCounts()
    counts.add_masks(predicted, reference, valid, pixel_area_m2=9.0)  # 3 m pixels
    # square 1: IoU 64/136 = 0.47 -> match; square 2 missed; the 5x5 one is a false positive
    assert [int(getattr(counts, n)) for n in ObjectCounts.COUNTS] == [1, 1, 1]
    result = counts.compute()
    assert result["object_precision"] == result["object_recall"] == result["object_f1"] == 0.5
    assert float(counts.area_km2) == pytest.approx(9500 * 9 / 1e6)
    assert result["object_fp_per_100km2"] == pytest.approx(100 / (9500 * 9 / 1e6))
    twice = ObjectCounts()
    for _ in range(2):  # e.g. two scenes
        twice.add_masks(predicted, reference, valid, pixel_area_m2=9.0)
    assert twice.compute() == result and int(twice.false_negatives) == 2
    strict = ObjectCounts(iou_threshold=0.5)
    strict.add_masks(predicted, reference, valid, 9.0)
    assert int(strict.true_positives) == 0 and strict.compute()["object_f1"] == 0.0


def test_regions_cut_by_strip_borders_are_one_polygon_again():
    from rasterio.transform import from_origin

    from rts_ssl.data.vectorise import StripPolygons

    mask = np.zeros((30, 20), np.uint8)
    square(mask, 5, 2, 16)   # crosses both strip borders (rows 10 and 20)
    square(mask, 0, 15, 3)   # inside the first strip
    transform = from_origin(100, 200, 2, 2)
    regions = StripPolygons()
    for top in (0, 10, 20):
        regions.add(mask[top:top + 10], transform * transform.translation(0, top))
    polygons = sorted(regions.polygons(), key=lambda p: p.area)
    assert len(regions.parts) == 4 and len(polygons) == 2
    assert [p.area for p in polygons] == [9 * 4, 16 * 16 * 4]
    assert polygons[1].bounds == (104, 200 - 21 * 2, 136, 200 - 5 * 2)
    assert [p.area for p in sorted(mask_objects(mask), key=lambda p: p.area)] == [9, 256]


def test_scene_mosaic_counts_a_slump_cut_by_window_borders_once():
    from rts_ssl.data.dataset import WindowLayout
    from rts_ssl.evaluation.metrics import SceneMosaic

    # scene 0: two 8 px windows side by side; scene 1: one window
    layout = WindowLayout(np.array([0, 0, 1]), np.array([[0, 0], [0, 8], [0, 0]]),
                          np.array([[8, 16], [8, 8]]), 8)
    slump = np.zeros((8, 16), bool)
    slump[2:6, 5:11] = True  # across the border at column 8
    halves = np.stack([slump[:, :8], slump[:, 8:]])
    counted = np.ones((2, 8, 8), bool)
    objects = ObjectCounts()
    mosaic = SceneMosaic(layout, objects, pixel_area_m2=100.0)
    mosaic.add(np.array([0]), halves[:1], halves[:1], counted[:1])
    assert set(mosaic.canvases) == {0}  # waits for the scene's second window
    mosaic.add(np.array([1]), halves[1:], halves[1:], counted[1:])
    assert not mosaic.canvases  # counted and let go
    false_positive = np.zeros((1, 8, 8), bool)
    false_positive[0, 1:3, 1:3] = True
    mosaic.add(np.array([2]), false_positive, np.zeros((1, 8, 8), bool), counted[:1])
    mosaic.finish()
    assert (int(objects.true_positives), int(objects.false_positives),
            int(objects.false_negatives)) == (1, 1, 0)
    assert float(objects.area_km2) == pytest.approx(192 * 100 / 1e6)
    windowed = ObjectCounts()  # window by window, the slump would be two objects
    for pred in halves:
        windowed.add_masks(pred, pred, np.ones((8, 8), bool), 100.0)
    assert int(windowed.true_positives) == 2
