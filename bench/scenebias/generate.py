"""A controlled scene-bias benchmark: shapes pasted on real photos, with the bias known by construction.

Two sets, written as ordinary image folders (torchvision ``ImageFolder`` layout) plus the ground truth the
generator knows (binary masks, per-image records):

* **Background set** (``bg/``), in the Background Challenge layout (Xiao et al., ICLR 2021, which Mo et al.
  use), so ``occon-eval-bgchallenge root=<out>/bg`` evaluates it unchanged:
  ``original/train`` (training images: class ``k`` takes a background of group ``k`` with probability
  ``rho``, else of a uniformly random group; ``only_fg/train`` holds their objects on black, for the
  learnability probe) and ``<variant>/val`` for ``original`` (same distribution,
  held-out photos), ``only_fg`` (the object on black), ``only_bg_b`` (the background with the object's
  silhouette black), ``only_bg_t`` (the background alone), ``mixed_same`` (the object on another background
  of its own group), ``mixed_rand`` (on a background of a random OTHER group), ``mixed_next`` (group
  ``k+1``). All variants of one validation sample share its object (shape, pose, colour, place), so
  their accuracies are paired. BG-Gap = acc(mixed_same) - acc(mixed_rand).
* **Contextual set** (``ctx/``): scenes of 2-4 objects for pretraining (``ctx/train/scene/``), in which
  classes come in partner pairs ``(0,1), (2,3), ...``: the second object of a scene is the first one's
  partner with probability ``ctx_rho``; backgrounds carry no class information. Evaluation images hold
  one object each (``ctx/single/{train,test}/<class>/``): a representation that entangles co-occurring
  objects confuses partners there.

Backgrounds are real photos (``--backgrounds``; default: the project's dev sets under ``../shared/data``)
split into ``K`` groups of similar colour layout and texture (k-means on simple image statistics, balanced
sizes), and within each group into photos for training images and photos for validation/test images, so
a background "class" is a visual kind of scene, as in ImageNet-9, and no test background was seen in
training.

Everything is a function of ``seed`` (each image draws from its own ``SeedSequence`` child), so the same
arguments give the same files byte for byte. Ground truth: ``masks/<set path>.png`` (0/255), and
``records/<set>.jsonl`` (one JSON object per image: class, background photo and group, object boxes).
"""
from __future__ import annotations

import argparse
import colorsys
import hashlib
import json
import math
import os
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

import numpy as np
from PIL import Image, ImageFilter

if __package__ in (None, ""):  # run as a script: python bench/scenebias/generate.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from scenebias.shapes import MAX_CLASSES, SHAPES, render_alpha  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DEFAULT_BACKGROUNDS = [REPO.parent / "shared" / "data" / name / "images" for name in ("coco128", "horses-dev",
                                                                                     "ecssd-dev")]
PHOTO_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
BG_VARIANTS = ("original", "only_fg", "only_bg_b", "only_bg_t", "mixed_same", "mixed_rand", "mixed_next")
GENERATOR_VERSION = 2


class GeneratorError(Exception):
    """Bad generator input (too few photos, bad parameter); the message says what to do."""


@dataclass(frozen=True)
class SceneBiasConfig:
    """Every parameter of the generated data (recorded in ``<out>/meta.json``)."""

    seed: int = 0
    classes: int = 6                      # K object classes (= background groups)
    size: int = 64                        # image side in pixels
    rho: float = 0.9                      # P(background group == class) in original/train and original/val
    train_per_class: int = 150
    val_per_class: int = 100              # per variant
    obj_extent: tuple = (0.5, 0.75)       # object diameter / image side (background set)
    obj_saturation: tuple = (0.45, 1.0)   # object colour: HSV saturation range (hue uniform)
    obj_value: tuple = (0.45, 1.0)        # object colour: HSV value range
    obj_fill: str = "photo"               # flat: one colour (+ shading, noise); photo: a patch of a random photo
    bg_blur: float = 1.5                  # Gaussian blur radius (pixels) of the backgrounds: less unique detail
    bg_val_fraction: float = 0.25         # photos of each group kept for validation/test backgrounds
    bg_crop: tuple = (0.5, 1.0)           # background crop side / photo's shorter side
    ctx_scenes: int = 900
    ctx_rho: float = 0.9                  # P(second object = first object's partner)
    ctx_objects: tuple = (2, 4)           # objects per scene, inclusive
    ctx_extent: tuple = (0.30, 0.40)      # object diameter / image side (contextual set)
    single_train_per_class: int = 100
    single_test_per_class: int = 100

    def check(self) -> None:
        if not 2 <= self.classes <= MAX_CLASSES:
            raise GeneratorError(f"classes={self.classes}: between 2 and {MAX_CLASSES} ({', '.join(SHAPES)})")
        if not 0.0 <= self.rho <= 1.0 or not 0.0 <= self.ctx_rho <= 1.0:
            raise GeneratorError(f"rho={self.rho}, ctx_rho={self.ctx_rho}: probabilities in [0, 1]")
        if self.size < 16:
            raise GeneratorError(f"size={self.size}: at least 16 pixels")
        if self.obj_fill not in ("flat", "photo"):
            raise GeneratorError(f"obj_fill={self.obj_fill!r}: flat or photo")
        if not 2 <= self.ctx_objects[0] <= self.ctx_objects[1] <= 6:
            raise GeneratorError(f"ctx_objects={self.ctx_objects}: 2 <= min <= max <= 6")
        for name in ("train_per_class", "val_per_class", "ctx_scenes", "single_train_per_class",
                     "single_test_per_class"):
            if getattr(self, name) < 1:
                raise GeneratorError(f"{name}={getattr(self, name)}: at least 1")
        for name in ("obj_extent", "bg_crop", "ctx_extent"):
            lo, hi = getattr(self, name)
            if not 0.0 < lo <= hi <= 1.0:
                raise GeneratorError(f"{name}={lo},{hi}: 0 < lo <= hi <= 1 (a share of the image side)")
        for name in ("obj_saturation", "obj_value"):
            lo, hi = getattr(self, name)
            if not 0.0 <= lo <= hi <= 1.0:
                raise GeneratorError(f"{name}={lo},{hi}: 0 <= lo <= hi <= 1")
        if not 0.0 < self.bg_val_fraction < 1.0:
            raise GeneratorError(f"bg_val_fraction={self.bg_val_fraction}: between 0 and 1 (exclusive)")
        if not self.bg_blur >= 0.0:
            raise GeneratorError(f"bg_blur={self.bg_blur}: 0 or more (pixels)")

    @property
    def class_names(self) -> List[str]:
        return list(SHAPES)[: self.classes]

    def partner(self, k: int) -> Optional[int]:
        """Partner class of ``k`` in the contextual set: pairs (0,1), (2,3), ...; None for an odd last class."""
        p = k ^ 1
        return p if p < self.classes else None


# ---------------------------------------------------------------- backgrounds -----------------------------
@dataclass
class Photo:
    key: str            # source path relative to its background folder (recorded)
    pixels: np.ndarray  # uint8 (H, W, 3), shorter side = 2 * size
    group: int = -1
    split: str = ""     # train | val


def list_photos(folders: Sequence[Path]) -> List[tuple[str, Path]]:
    """``(key, path)`` of every photo under ``folders`` (recursive, sorted; hidden files skipped)."""
    out = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise GeneratorError(f"background folder {folder} does not exist: pass --backgrounds <folder of photos>")
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() in PHOTO_EXTENSIONS and path.is_file() and not any(
                    p.startswith(".") for p in path.relative_to(folder).parts):
                out.append((f"{folder.parent.name}/{folder.name}/{path.relative_to(folder).as_posix()}", path))
    return out


def load_photos(folders: Sequence[Path], size: int) -> List[Photo]:
    photos = []
    for key, path in list_photos(folders):
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                scale = 2 * size / min(im.size)
                im = im.resize((max(2 * size, round(im.width * scale)), max(2 * size, round(im.height * scale))),
                               Image.Resampling.BILINEAR, reducing_gap=2.0)
                photos.append(Photo(key, np.asarray(im, dtype=np.uint8).copy()))
        except OSError as exc:
            print(f"[scenebias] skipped unreadable background {key}: {exc}", file=sys.stderr)
    return photos


def photo_features(p: np.ndarray) -> np.ndarray:
    """Colour layout and texture of a photo: mean CIE-Lab of a 2x2 grid, Lab std, mean gradient magnitude."""
    from skimage.color import rgb2lab

    lab = rgb2lab(p[::2, ::2].astype(np.float64) / 255.0)
    h, w = lab.shape[:2]
    cells = [lab[i * h // 2:(i + 1) * h // 2, j * w // 2:(j + 1) * w // 2].reshape(-1, 3).mean(0)
             for i in range(2) for j in range(2)]
    gy, gx = np.gradient(lab[..., 0])
    return np.concatenate([*cells, lab.reshape(-1, 3).std(0), [np.hypot(gx, gy).mean()]])


def group_photos(photos: List[Photo], k: int, seed: int, val_fraction: float) -> None:
    """Assign ``photo.group`` (k-means on :func:`photo_features`, balanced: at most ceil(N / K) photos per
    group, and at least 2; the shipped dev sets: 116-118 per group)
    and ``photo.split`` (per group, ``val_fraction`` of the photos, at least one, for validation)."""
    from scipy.optimize import linear_sum_assignment
    from sklearn.cluster import KMeans

    if len(photos) < 2 * k:
        raise GeneratorError(f"{len(photos)} background photos for {k} groups: need at least {2 * k} "
                             "(2 per group: one for training images, one for validation)")
    feats = np.stack([photo_features(p.pixels) for p in photos])
    feats = (feats - feats.mean(0)) / (feats.std(0) + 1e-9)
    centres = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(feats).cluster_centers_
    cap = math.ceil(len(photos) / k)
    cost = ((feats[:, None, :] - centres[None]) ** 2).sum(-1)           # (N, K)
    slots = np.repeat(cost, cap, axis=1)                                # each centre `cap` slots
    rows, cols = linear_sum_assignment(slots)                           # sizes <= cap, not >= cap - 1
    if np.bincount(cols // cap, minlength=k).min() < 2:
        # a group too small for a training and a validation photo (13 photos for 6 groups gave groups of 1):
        # each centre's first N // K slots are filled before any other (cheaper by more than any cost
        # difference), so sizes are N // K or one more. Only then: where every group had 2 photos, the groups
        # (and so the data of runs made before) stay as they were
        slots[:, np.arange(k * cap) % cap < len(photos) // k] -= float(cost.max() - cost.min()) + 1.0
        rows, cols = linear_sum_assignment(slots)
    for r, c in zip(rows, cols):
        photos[r].group = int(c // cap)
    # Order groups by mean lightness so group ids are stable and readable (0 = darkest).
    order = np.argsort([feats[[i for i, p in enumerate(photos) if p.group == g], 0].mean() for g in range(k)])
    remap = {int(old): new for new, old in enumerate(order)}
    for p in photos:
        p.group = remap[p.group]
    rng = np.random.default_rng([seed, 7])
    for g in range(k):
        members = [p for p in photos if p.group == g]
        n_val = max(1, round(val_fraction * len(members)))
        val = set(rng.choice(len(members), n_val, replace=False).tolist())
        for i, p in enumerate(members):
            p.split = "val" if i in val else "train"


class Backgrounds:
    """Photos by (group, split); :meth:`crop` draws a random square background from one."""

    def __init__(self, photos: List[Photo], k: int, size: int, crop: tuple, blur: float = 0.0):
        self.size, self.crop_range, self.blur = size, crop, blur
        self.all = photos
        self.by = {(g, s): [p for p in photos if p.group == g and p.split == s] for g in range(k)
                   for s in ("train", "val")}
        empty = [key for key, v in self.by.items() if not v]
        if empty:
            raise GeneratorError(f"background groups without photos {empty}: give more photos (--backgrounds)")

    def crop(self, rng: np.random.Generator, group: int, split: str) -> tuple[np.ndarray, dict]:
        pool = self.by[(group, split)]
        photo = pool[int(rng.integers(len(pool)))]
        h, w = photo.pixels.shape[:2]
        side = int(round(rng.uniform(*self.crop_range) * min(h, w)))
        y, x = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
        patch = Image.fromarray(photo.pixels[y:y + side, x:x + side]).resize((self.size, self.size),
                                                                          Image.Resampling.BILINEAR,
                                                                          reducing_gap=2.0)
        if self.blur > 0:
            patch = patch.filter(ImageFilter.GaussianBlur(self.blur))
        out = np.asarray(patch, dtype=np.uint8)
        flip = bool(rng.random() < 0.5)
        if flip:
            out = out[:, ::-1]
        return np.ascontiguousarray(out), {"photo": photo.key, "group": group, "split": split,
                                           "crop": [x, y, side], "flip": flip}


# ---------------------------------------------------------------- objects ----------------------------------
def texture_patch(rng: np.random.Generator, photos: List[Photo], size: int) -> np.ndarray:
    """A random ``size x size`` patch (float32 RGB) of a random photo of any group: an object's surface."""
    photo = photos[int(rng.integers(len(photos)))]
    h, w = photo.pixels.shape[:2]
    side = int(round(rng.uniform(0.3, 0.6) * min(h, w)))
    y, x = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
    patch = Image.fromarray(photo.pixels[y:y + side, x:x + side]).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(patch, dtype=np.float32)


@dataclass
class ObjectDraw:
    cls: int
    center: tuple
    radius: float
    angle: float
    aspect: float
    rgb: tuple
    shade: tuple  # linear shading (dx, dy) in [-0.15, 0.15]

    def alpha(self, names: Sequence[str], size: int) -> np.ndarray:
        return render_alpha(names[self.cls], size, self.center, self.radius, self.angle, self.aspect)

    def fill(self, size: int, rng_noise: np.random.Generator, texture: Optional[np.ndarray] = None) -> np.ndarray:
        """The object's colour field, float32 (size, size, 3) in [0, 255]: its colour, or ``texture``."""
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1) - 0.5
        shade = 1.0 + self.shade[0] * xx + self.shade[1] * yy
        base = texture if texture is not None else np.array(self.rgb, np.float32)[None, None]
        base = base * shade[..., None]
        return np.clip(base + rng_noise.normal(0.0, 6.0, (size, size, 3)).astype(np.float32), 0, 255)


def draw_object(rng: np.random.Generator, cls: int, size: int, extent: tuple, saturation: tuple, value: tuple,
                center: Optional[tuple] = None, radius: Optional[float] = None) -> ObjectDraw:
    radius = radius if radius is not None else rng.uniform(*extent) * size / 2
    aspect = float(rng.uniform(0.85, 1.15))
    reach = radius * max(aspect, 1 / aspect)
    if center is None:
        lo, hi = reach + 1, size - reach - 1
        center = (float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi))) if hi > lo else (size / 2, size / 2)
    h, s, v = rng.uniform(0, 1), rng.uniform(*saturation), rng.uniform(*value)
    rgb = tuple(255.0 * c for c in colorsys.hsv_to_rgb(h, s, v))
    return ObjectDraw(cls=cls, center=center, radius=float(radius), angle=float(rng.uniform(0, 2 * math.pi)),
                      aspect=aspect, rgb=rgb, shade=tuple(rng.uniform(-0.15, 0.15, 2).tolist()))


def composite(bg: np.ndarray, objects: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """``bg`` uint8 (H, W, 3) with each ``(alpha (H, W), fill (H, W, 3))`` blended over it in order."""
    out = bg.astype(np.float32)
    for alpha, fill in objects:
        a = alpha[..., None]
        out = a * fill + (1 - a) * out
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def mask_boxes(mask: np.ndarray) -> List[List[int]]:
    """Pixel box ``[x1, y1, x2, y2]`` (half-open) of a binary mask; empty list when it is empty."""
    ys, xs = np.nonzero(mask)
    return [] if len(xs) == 0 else [[int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]]


# ---------------------------------------------------------------- writing ----------------------------------
class Writer:
    """PNG images + masks under ``out`` and one record per image in ``records/<set>.jsonl``."""

    def __init__(self, out: Path):
        self.out = out
        self.records: dict[str, list] = {}

    def image(self, rel: str, pixels: np.ndarray) -> None:
        path = self.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path, optimize=False, compress_level=6)

    def mask(self, rel: str, mask: np.ndarray) -> None:
        self.image("masks/" + rel, (mask.astype(np.uint8) * 255))

    def record(self, name: str, row: dict) -> None:
        self.records.setdefault(name, []).append(row)

    def close(self) -> None:
        (self.out / "records").mkdir(parents=True, exist_ok=True)
        for name, rows in self.records.items():
            (self.out / "records" / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _rng(cfg: SceneBiasConfig, *stream: int) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, *stream])


def _texture(cfg: SceneBiasConfig, bgs: Backgrounds, rng: np.random.Generator) -> Optional[np.ndarray]:
    return texture_patch(rng, bgs.all, cfg.size) if cfg.obj_fill == "photo" else None


def _background_group(rng: np.random.Generator, k: int, n: int, rho: float) -> int:
    return k if rng.random() < rho else int(rng.integers(n))


def generate_background_set(cfg: SceneBiasConfig, bgs: Backgrounds, w: Writer) -> None:
    names, K, S = cfg.class_names, cfg.classes, cfg.size
    for k in range(K):
        for i in range(cfg.train_per_class):
            rng = _rng(cfg, 1, k, i)
            bg, bg_rec = bgs.crop(rng, _background_group(rng, k, K, cfg.rho), "train")
            obj = draw_object(rng, k, S, cfg.obj_extent, cfg.obj_saturation, cfg.obj_value)
            alpha = obj.alpha(names, S)
            rel = f"bg/original/train/{names[k]}/{names[k]}_{i:05d}.png"
            fill = obj.fill(S, rng, _texture(cfg, bgs, rng))
            w.image(rel, composite(bg, [(alpha, fill)]))
            m = alpha >= 0.5
            w.mask(rel, m)
            w.record("bg_train", {"path": rel, "class": k, "background": bg_rec, "boxes": mask_boxes(m)})
            # the same object on black: a probe trained here measures how learnable the shapes are
            w.image(f"bg/only_fg/train/{names[k]}/{names[k]}_{i:05d}.png",
                    composite(np.zeros((S, S, 3), np.uint8), [(alpha, fill)]))
        for i in range(cfg.val_per_class):
            rng = _rng(cfg, 2, k, i)
            obj = draw_object(rng, k, S, cfg.obj_extent, cfg.obj_saturation, cfg.obj_value)
            alpha = obj.alpha(names, S)
            fill = obj.fill(S, rng, _texture(cfg, bgs, rng))
            m = alpha >= 0.5
            others = [g for g in range(K) if g != k]
            groups = {"original": _background_group(rng, k, K, cfg.rho), "mixed_same": k,
                      "mixed_rand": others[int(rng.integers(len(others)))], "mixed_next": (k + 1) % K,
                      "only_bg": k}
            backs = {name: bgs.crop(rng, g, "val") for name, g in groups.items()}
            black = np.zeros((S, S, 3), np.uint8)
            images = {
                "original": composite(backs["original"][0], [(alpha, fill)]),
                "only_fg": composite(black, [(alpha, fill)]),
                "only_bg_b": composite(backs["only_bg"][0], [(alpha, np.zeros_like(fill))]),
                "only_bg_t": backs["only_bg"][0],
                "mixed_same": composite(backs["mixed_same"][0], [(alpha, fill)]),
                "mixed_rand": composite(backs["mixed_rand"][0], [(alpha, fill)]),
                "mixed_next": composite(backs["mixed_next"][0], [(alpha, fill)]),
            }
            for variant in BG_VARIANTS:
                rel = f"bg/{variant}/val/{names[k]}/{names[k]}_{i:05d}.png"
                w.image(rel, images[variant])
                has_object = variant not in ("only_bg_b", "only_bg_t")
                if has_object:
                    w.mask(rel, m)
                back = backs["only_bg" if variant.startswith("only_bg") else variant] \
                    if variant != "only_fg" else None
                w.record("bg_val", {"path": rel, "variant": variant, "class": k, "sample": i,
                                    "background": None if back is None else back[1],
                                    "boxes": mask_boxes(m) if has_object else []})


def _place(rng: np.random.Generator, S: int, n: int, extent: tuple) -> Optional[List[tuple]]:
    """``n`` non-overlapping (centre, radius) pairs in an ``S x S`` image (2 px apart), or None."""
    placed: List[tuple] = []
    for _ in range(n):
        for _attempt in range(200):
            r = rng.uniform(*extent) * S / 2
            reach = r * 1.15
            c = (float(rng.uniform(reach + 1, S - reach - 1)), float(rng.uniform(reach + 1, S - reach - 1)))
            if all(math.hypot(c[0] - q[0], c[1] - q[1]) >= 1.15 * (r + qr) + 2 for q, qr in placed):
                placed.append((c, r))
                break
        else:
            return None
    return placed


def scene_classes(rng: np.random.Generator, cfg: SceneBiasConfig) -> List[int]:
    """Classes of one scene: a first class, its partner with probability ``ctx_rho`` (else a class
    that is neither), then uniformly random classes up to the drawn object count."""
    K = cfg.classes
    n = int(rng.integers(cfg.ctx_objects[0], cfg.ctx_objects[1] + 1))
    a = int(rng.integers(K))
    p = cfg.partner(a)
    if p is not None and rng.random() < cfg.ctx_rho:
        b = p
    else:
        pool = [c for c in range(K) if c not in (a, p)]
        b = pool[int(rng.integers(len(pool)))]
    return [a, b] + [int(rng.integers(K)) for _ in range(n - 2)]


def generate_context_set(cfg: SceneBiasConfig, bgs: Backgrounds, w: Writer) -> None:
    names, K, S = cfg.class_names, cfg.classes, cfg.size
    for i in range(cfg.ctx_scenes):
        rng = _rng(cfg, 3, i)
        classes = scene_classes(rng, cfg)
        spots = None
        while spots is None:
            spots = _place(rng, S, len(classes), cfg.ctx_extent)
            if spots is None:
                classes = classes[:-1]  # too crowded: one object fewer (never below 2 with these extents)
        bg, bg_rec = bgs.crop(rng, int(rng.integers(K)), "train")
        objs = [draw_object(rng, c, S, cfg.ctx_extent, cfg.obj_saturation, cfg.obj_value, center=ctr, radius=r) for c, (ctr, r) in zip(classes, spots)]
        layers = [(o.alpha(names, S), o.fill(S, rng, _texture(cfg, bgs, rng))) for o in objs]
        rel = f"ctx/train/scene/scene_{i:05d}.png"
        w.image(rel, composite(bg, layers))
        union = np.zeros((S, S), bool)
        boxes = []
        for alpha, _ in layers:
            m = alpha >= 0.5
            union |= m
            boxes += mask_boxes(m)
        w.mask(rel, union)
        w.record("ctx_train", {"path": rel, "classes": classes, "background": bg_rec, "boxes": boxes})
    for split, per_class, stream, photos in (("train", cfg.single_train_per_class, 4, "train"),
                                             ("test", cfg.single_test_per_class, 5, "val")):
        for k in range(K):
            for i in range(per_class):
                rng = _rng(cfg, stream, k, i)
                bg, bg_rec = bgs.crop(rng, int(rng.integers(K)), photos)
                obj = draw_object(rng, k, S, cfg.ctx_extent, cfg.obj_saturation, cfg.obj_value)
                alpha = obj.alpha(names, S)
                rel = f"ctx/single/{split}/{names[k]}/{names[k]}_{i:05d}.png"
                w.image(rel, composite(bg, [(alpha, obj.fill(S, rng, _texture(cfg, bgs, rng)))]))
                m = alpha >= 0.5
                w.mask(rel, m)
                w.record(f"ctx_single_{split}", {"path": rel, "class": k, "background": bg_rec,
                                                 "boxes": mask_boxes(m)})


def config_digest(cfg: SceneBiasConfig, photo_keys: Iterable[str]) -> str:
    blob = json.dumps({"cfg": asdict(cfg), "photos": sorted(photo_keys), "version": GENERATOR_VERSION},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def generate(out: Path, cfg: SceneBiasConfig, backgrounds: Optional[Sequence[Path]] = None,
             sets: Sequence[str] = ("bg", "ctx")) -> dict:
    """Write the benchmark data under ``out`` and return its ``meta.json`` content.

    A folder that already holds a finished generation with the same configuration and photos is left as
    it is (``meta.json`` is written last, so an interrupted generation is redone from scratch).
    Raises GeneratorError on bad parameters, missing background folders or too few photos.
    """
    cfg.check()
    out = Path(out)
    folders = [Path(f) for f in (backgrounds or DEFAULT_BACKGROUNDS)]
    keys = [k for k, _ in list_photos(folders)]
    digest = config_digest(cfg, keys)
    meta_path = out / "meta.json"
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except ValueError:  # cut short or overwritten: generated again
            meta = {}
        if isinstance(meta, dict) and meta.get("digest") == digest and set(meta.get("sets", [])) >= set(sets):
            return meta
    if out.exists() and any(out.iterdir()):
        import shutil

        for name in ("bg", "ctx", "masks", "records", "meta.json"):
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)
    photos = load_photos(folders, cfg.size)
    group_photos(photos, cfg.classes, cfg.seed, cfg.bg_val_fraction)
    bgs = Backgrounds(photos, cfg.classes, cfg.size, cfg.bg_crop, cfg.bg_blur)
    w = Writer(out)
    if "bg" in sets:
        generate_background_set(cfg, bgs, w)
    if "ctx" in sets:
        generate_context_set(cfg, bgs, w)
    w.close()
    meta = {"digest": digest, "version": GENERATOR_VERSION, "config": asdict(cfg), "sets": list(sets),
            "classes": cfg.class_names,
            "partners": {cfg.class_names[k]: (cfg.class_names[p] if p is not None else None)
                         for k in range(cfg.classes) for p in [cfg.partner(k)]},
            "photos": {p.key: {"group": p.group, "split": p.split} for p in photos}}
    tmp = meta_path.with_name(".meta.json.tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, meta_path)
    return meta


def parse_args(argv=None) -> argparse.Namespace:
    """Every :class:`SceneBiasConfig` field is an option (``--train-per-class 100``, ``--obj-extent 0.5 0.7``)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "outputs" / "science" / "data")
    ap.add_argument("--backgrounds", type=Path, nargs="+", default=None,
                    help="folders of photos (default: the dev sets under ../shared/data)")
    for f in fields(SceneBiasConfig):
        default = getattr(SceneBiasConfig, f.name)
        if isinstance(default, tuple):
            ap.add_argument(f"--{f.name.replace('_', '-')}", type=type(default[0]), nargs=2, default=default)
        else:
            ap.add_argument(f"--{f.name.replace('_', '-')}", type=type(default), default=default)
    return ap.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> SceneBiasConfig:
    return SceneBiasConfig(**{f.name: (tuple(v) if isinstance(v := getattr(args, f.name), list) else v)
                              for f in fields(SceneBiasConfig)})


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = config_from_args(args)
    try:
        meta = generate(args.out, cfg, args.backgrounds)
    except GeneratorError as exc:
        print(f"[scenebias] error: {exc}", file=sys.stderr)
        return 2
    print(f"[scenebias] {args.out}: classes {meta['classes']}, digest {meta['digest']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
