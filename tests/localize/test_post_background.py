import numpy as np
import pytest

from occon_plugin.localize.background import background_image, largest_empty_rectangle


def _brute_force_area(mask):
    h, w = mask.shape
    ones = np.pad(mask.astype(int).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    best = 0
    for y1 in range(h):
        for y2 in range(y1 + 1, h + 1):
            for x1 in range(w):
                for x2 in range(x1 + 1, w + 1):
                    inside = ones[y2, x2] - ones[y1, x2] - ones[y2, x1] + ones[y1, x1]
                    if inside == 0:
                        best = max(best, (y2 - y1) * (x2 - x1))
    return best


def test_constructed_masks():
    mask = np.zeros((6, 10), dtype=bool)
    mask[:, 3] = True  # a wall at column 3: the right part (6 wide x 6 high) wins
    assert largest_empty_rectangle(mask) == (4, 0, 10, 6)
    mask = np.zeros((5, 5), dtype=bool)
    mask[1:4, 1:4] = True  # ring of zeros around a square: best is a full 5x1 border strip
    x1, y1, x2, y2 = largest_empty_rectangle(mask)
    assert (x2 - x1) * (y2 - y1) == 5
    assert largest_empty_rectangle(np.ones((3, 4), dtype=bool)) is None
    assert largest_empty_rectangle(np.zeros((3, 4), dtype=bool)) == (0, 0, 4, 3)


@pytest.mark.parametrize("seed", range(40))
def test_random_masks_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(1, 9, size=2)
    _assert_largest(rng.random((h, w)) < rng.uniform(0.1, 0.7))


def _assert_largest(mask):
    """The rectangle is empty and as large as brute force finds; returns (rect, best area)."""
    rect = largest_empty_rectangle(mask)
    best = _brute_force_area(mask)
    if best == 0:
        assert rect is None
        return None, 0
    x1, y1, x2, y2 = rect
    assert not mask[y1:y2, x1:x2].any() and (x2 - x1) * (y2 - y1) == best
    return rect, best


@pytest.mark.parametrize("seed", range(40))
def test_repeated_rows_and_columns_match_brute_force(seed):
    """Runs of identical rows/columns are compressed: the result must not change (area and tie-break)."""
    rng = np.random.default_rng(100 + seed)
    h, w = rng.integers(1, 6, size=2)
    base = rng.random((h, w)) < rng.uniform(0.1, 0.7)
    mask = np.repeat(np.repeat(base, rng.integers(1, 4, size=h), axis=0), rng.integers(1, 4, size=w), axis=1)
    rect, best = _assert_largest(mask)
    if rect is None:
        return
    x1, y1, x2, y2 = rect
    # the tie-break: the first bottom row, then the first left edge, among the largest rectangles
    for y in range(y2 - 1):
        for top in range(y + 1):
            for a in range(mask.shape[1]):
                for b in range(a + 1, mask.shape[1] + 1):
                    if (b - a) * (y + 1 - top) == best:
                        assert mask[top:y + 1, a:b].any(), (rect, (a, top, b, y + 1))


def test_background_image_tiles_the_crop():
    image = np.arange(5 * 6 * 3, dtype=np.uint8).reshape(5, 6, 3)
    out = background_image(image, (1, 2, 3, 4))  # 2x2 patch rows 2-3, cols 1-2
    patch = image[2:4, 1:3]
    assert out.shape == image.shape
    for y in range(5):
        for x in range(6):
            np.testing.assert_array_equal(out[y, x], patch[y % 2, x % 2])
    assert background_image(image[..., 0], (0, 0, 1, 1), size=(3, 4)).shape == (3, 4)
    with pytest.raises(ValueError, match="empty or outside"):
        background_image(image, (2, 2, 2, 4))
