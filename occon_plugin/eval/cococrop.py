"""COCO-Crop (Mo et al., App. B.2): COCO objects cropped by their GT boxes with a 20 % margin,
written as class folders for linear evaluation.

Images are split into train/test by image (a seeded shuffle of image ids), so crops of one photo
never sit on both sides. Crowd annotations and boxes smaller than ``min_size`` pixels are skipped;
categories with fewer than ``min_per_class`` crops in either split are dropped.
"""
from __future__ import annotations

import contextlib
import io
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from occon_plugin.images import BadImageError, list_images, load_image
from occon_plugin.atomic import atomic_path, make_output_dir


def crop_box(x: float, y: float, w: float, h: float, width: int, height: int, margin: float) -> tuple[int, ...]:
    """``[x, y, w, h]`` grown by ``margin`` x its size on each side, clipped: integer ``(x0, y0, x1, y1)``."""
    x0 = max(0, int(np.floor(x - margin * w)))
    y0 = max(0, int(np.floor(y - margin * h)))
    x1 = min(width, int(np.ceil(x + w + margin * w)))
    y1 = min(height, int(np.ceil(y + h + margin * h)))
    return x0, y0, x1, y1


def build_coco_crop(json_path, out_dir, image_root=None, margin: float = 0.2, min_size: int = 32,
                    test_fraction: float = 0.3, min_per_class: int = 2, seed: int = 0) -> dict:
    """Write ``out_dir/{train,test}/<category>/<image stem>_<ann id>.jpg``; returns counts.

    Raises:
        ValueError: no category has enough crops of the minimum size in both splits.
    """
    from pycocotools.coco import COCO

    listing = list_images(json_path, image_root)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(json_path))
    ids = np.array(sorted(listing.image_ids))
    rng = np.random.default_rng(seed)
    test_ids = set(rng.permutation(ids)[: int(round(len(ids) * test_fraction))].tolist())
    names = {c["id"]: c["name"].replace(" ", "_") for c in coco.loadCats(coco.getCatIds())}
    crops = defaultdict(list)  # (split, category) -> [(rel, ann)]
    for rel, image_id in zip(listing.paths, listing.image_ids):
        split = "test" if image_id in test_ids else "train"
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[image_id], iscrowd=False)):
            if min(ann["bbox"][2], ann["bbox"][3]) >= min_size:
                crops[(split, names[ann["category_id"]])].append((rel, ann))
    kept = sorted(c for c in names.values()
                  if len(crops[("train", c)]) >= min_per_class and len(crops[("test", c)]) >= min_per_class)
    if not kept:
        raise ValueError(f"{json_path}: no category has {min_per_class}+ crops of {min_size}+ px in both splits")
    counts, bad = {"train": 0, "test": 0}, []
    out_dir = Path(out_dir)
    for (split, cat), items in sorted(crops.items(), key=lambda kv: kv[0]):
        if cat not in kept:
            continue
        folder = out_dir / split / cat
        make_output_dir(folder)
        for rel, ann in items:
            target = folder / f"{Path(rel).stem}_{ann['id']}.jpg"
            if not target.is_file():
                try:
                    image = load_image(listing.root, rel)
                except BadImageError as err:
                    bad.append(str(err))
                    continue
                x0, y0, x1, y1 = crop_box(*ann["bbox"], image.shape[1], image.shape[0], margin)
                with atomic_path(target, suffix=".jpg") as tmp:
                    Image.fromarray(image[y0:y1, x0:x1]).save(tmp, quality=95)
            counts[split] += 1
    return {"classes": kept, "train": counts["train"], "test": counts["test"], "bad_images": bad}
