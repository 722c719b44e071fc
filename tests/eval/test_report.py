"""The report helpers (markdown tables, image grids, palette PNGs) used by the benchmarks' docs.

The localization report itself is ``bench/localize_quality.py`` (tests: tests/localize/test_quality_bench.py).
"""
from __future__ import annotations

import numpy as np

from occon_plugin.eval.report import image_grid, markdown_table, save_png_palette


def test_markdown_table_formats_floats_and_missing_values():
    text = markdown_table([{"a": "x|y", "b": 0.12345}, {"a": "z", "b": None}], [("a", "name"), ("b", "score")],
                          digits=2)
    assert text == "| name | score |\n| --- | --- |\n| x\\|y | 0.12 |\n| z | – |\n"


def test_image_grid_layout_and_small_png(tmp_path):
    red = np.zeros((20, 40, 3), np.uint8)
    red[..., 0] = 255
    blue = np.zeros((10, 10, 3), np.uint8)
    blue[..., 2] = 255
    grid = image_grid([[red, blue], [blue, red]], ["a", "b"], tile_height=10, gap=2, title_height=5)
    # columns as wide as their widest tile (20 px for a 40x20 tile at height 10), 2 px gaps
    assert grid.shape == (5 + 2 * (10 + 2) + 2, 2 + 20 + 2 + 20 + 2, 3)
    assert tuple(grid[5 + 2 + 5, 2 + 10]) == (255, 0, 0)  # first row, first column: the red tile
    assert tuple(grid[5 + 2 + 12 + 5, 2 + 10]) == (0, 0, 255)  # second row, first column: blue, centred
    assert tuple(grid[5 + 2 + 12 + 5, 2]) == (255, 255, 255)  # left of the narrower blue tile: background
    path = save_png_palette(grid, tmp_path / "g.png")
    from PIL import Image

    with Image.open(path) as img:
        assert img.mode == "P" and img.size == (grid.shape[1], grid.shape[0])
        np.testing.assert_array_equal(np.asarray(img.convert("RGB")), grid)  # 3 colours: lossless
