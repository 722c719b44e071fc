import numpy as np
import pytest
from scipy import ndimage

from occon_plugin.localize.boxes import mask_to_boxes


def test_one_block_gets_twenty_percent_margins():
    mask = np.zeros((100, 200), dtype=np.float32)
    mask[40:60, 50:100] = 0.9  # w=50, h=20 -> x 40..110, y 36..64
    boxes = mask_to_boxes(mask, threshold=0.5)
    np.testing.assert_allclose(boxes, [[40 / 200, 36 / 100, 110 / 200, 64 / 100]])
    assert mask_to_boxes(mask, threshold=0.95) == []


def test_clipping_small_box_removal_and_order():
    mask = np.zeros((100, 100))
    mask[0:30, 0:10] = 1.0    # at the corner: margins clipped -> [0, 0, 12, 36]
    mask[50:90, 50:90] = 1.0  # large: [42, 42, 98, 98]
    mask[95:97, 95:97] = 1.0  # 2x2 (+margins ~2.8x2.8) < 1 % of the image: dropped
    boxes = mask_to_boxes(mask, threshold=0.5)
    np.testing.assert_allclose(boxes, [[0.42, 0.42, 0.98, 0.98], [0.0, 0.0, 0.12, 0.36]])
    assert len(mask_to_boxes(mask, threshold=0.5, min_area_frac=0.0)) == 3


@pytest.mark.parametrize("seed", range(20))
def test_random_blobs_match_connected_components(seed):
    rng = np.random.default_rng(seed)
    mask = np.zeros((40, 50))
    for _ in range(rng.integers(1, 4)):  # <= 3 rectangles cannot enclose a hole holding another blob
        y, x = rng.integers(0, 35), rng.integers(0, 45)
        mask[y:y + rng.integers(1, 12), x:x + rng.integers(1, 12)] = 1
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3)))  # OpenCV contours are 8-connected
    expected = sorted([s[1].start / 50, s[0].start / 40, s[1].stop / 50, s[0].stop / 40]
                      for s in ndimage.find_objects(labels))
    got = sorted(mask_to_boxes(mask, threshold=0.5, margin=0.0, min_area_frac=0.0))
    np.testing.assert_allclose(got, expected)
