"""Helpers of the bad-input battery (importable: ``conftest.py`` puts this folder on ``sys.path``)."""
from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

REPO = Path(__file__).resolve().parents[2]

# Localization settings small enough for CI (real model, real pipeline).
FAST_LOCALIZE = ["batch_size=8", "image_size=64", "cam.iters=1", "cam.expand=false", "refine.method=none",
                 "threads=1", "progress=false"]


def photo(name: str, size: tuple[int, int] = (48, 40)) -> np.ndarray:
    """A real photo from scikit-image as ``H x W x 3`` uint8, resized to ``size`` (w, h)."""
    img = np.asarray(getattr(skimage.data, name)())
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    return np.asarray(Image.fromarray(img[..., :3].astype(np.uint8)).resize(size, Image.BILINEAR))


def png_with_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` (a decompression-bomb size) with almost no data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + \
        chunk(b"IEND", b"")


def jpeg_bytes(image: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=kw.pop("quality", 92), **kw)
    return buf.getvalue()


@dataclass
class Mixed:
    """A generated folder: ``good`` images (decodable, in many modes; expected pixels for a few),
    ``bad`` (listed, unreadable), ``skipped`` (not listed: kind -> names)."""

    root: Path
    good: list[str]
    bad: list[str]
    skipped: dict[str, list[str]]
    expected: dict[str, np.ndarray] = field(default_factory=dict)


def make_mixed_folder(root: Path) -> Mixed:
    root.mkdir(parents=True, exist_ok=True)
    rgb = photo("astronaut")
    h, w = rgb.shape[:2]
    expected: dict[str, np.ndarray] = {}
    good = []

    def save(name: str, img: Image.Image, expect: np.ndarray | None = None, **kw) -> None:
        img.save(root / name, **kw)
        good.append(name)
        if expect is not None:
            expected[name] = expect

    # plain 8-bit files, several formats
    for name, src in (("a_rgb.jpg", "chelsea"), ("b_rgb.png", "coffee"), ("c_rgb.jpg", "rocket"),
                      ("d_rgb.webp", "hubble_deep_field"), ("e_rgb.bmp", "retina"), ("f_rgb.tif", "immunohistochemistry")):
        im = photo(src)
        save(name, Image.fromarray(im), im if not name.endswith(".jpg") else None,
             **({"lossless": True} if name.endswith(".webp") else {}))
    # modes (issue 10 item 1); expected pixels computed by hand from the documented rule
    ramp16 = np.linspace(0, 65535, h * w).reshape(h, w).astype(np.uint16)
    save("g16_grey.png", Image.fromarray(ramp16),
         np.repeat(np.rint(ramp16 * 255.0 / 65535.0).astype(np.uint8)[..., None], 3, 2))
    rgb16 = (rgb.astype(np.uint16) * 257 + np.arange(w, dtype=np.uint16)[None, :, None]).astype(np.uint16)
    import cv2

    cv2.imwrite(str(root / "h16_colour.png"), rgb16[..., ::-1])
    good.append("h16_colour.png")
    expected["h16_colour.png"] = np.rint(rgb16 * 255.0 / 65535.0).astype(np.uint8)
    save("i_int32.tif", Image.fromarray(ramp16.astype(np.int32)),
         np.repeat(np.rint(ramp16 * 255.0 / 65535.0).astype(np.uint8)[..., None], 3, 2))
    fl = (rgb[..., 0].astype(np.float32) / 255.0)
    save("j_float.tif", Image.fromarray(fl), np.repeat(np.rint(fl * 255.0).astype(np.uint8)[..., None], 3, 2))
    save("k_la.png", Image.fromarray(rgb).convert("LA"))
    rgba = np.dstack([rgb, np.tile(np.linspace(0, 255, w).astype(np.uint8), (h, 1))])
    save("l_rgba.png", Image.fromarray(rgba), rgb)  # alpha dropped: the colour channels as stored
    pal = Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=16)
    save("m_palette_transparent.png", pal, transparency=0)
    save("n_cmyk.jpg", Image.fromarray(rgb).convert("CMYK"))
    save("o_1bit.png", Image.fromarray(rgb).convert("1"))
    rot = Image.fromarray(photo("camera", (40, 48)))
    exif = rot.getexif()
    exif[274] = 6
    save("p_exif6.jpg", rot, exif=exif.tobytes())
    # bad files (listed by ImageFolder's extensions, unreadable)
    big = jpeg_bytes(photo("astronaut", (96, 96)))
    broken = bytearray(big)
    for k in range(len(broken) // 2, len(broken) // 2 + 400):
        broken[k] = (broken[k] * 7 + 13) % 256
    bad_files = {"q_zero.jpg": b"", "r_truncated.jpg": big[: len(big) // 2], "s_broken_middle.jpg": bytes(broken),
                 "t_text.jpg": b"this is a text file named like a photo\n",
                 "u_truncated.png": (root / "b_rgb.png").read_bytes()[:300], "v_bomb.png": png_with_header(20000, 20000)}
    for name, data in bad_files.items():
        (root / name).write_bytes(data)
    # skipped on purpose (not listed)
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + b"\x00" * 64)
    (root / "._a_rgb.jpg").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    (root / "notes.txt").write_text("not an image")
    Image.fromarray(rgb).save(root / "w_anim.gif")
    os.symlink(root / "does-not-exist.jpg", root / "x_dangling.jpg")
    (root / ".cache").mkdir()
    Image.fromarray(rgb).save(root / ".cache" / "thumb.jpg")
    skipped = {"hidden": [".cache/", "._a_rgb.jpg", ".DS_Store"], "not_image": ["notes.txt", "w_anim.gif"],
               "dangling_link": ["x_dangling.jpg"]}
    return Mixed(root, sorted(good), sorted(bad_files), skipped, expected)


def localize_settings(data, out, *extra):
    from hydra import compose, initialize_config_dir

    from occon_plugin.cli.localize import CONFIG_DIR, settings_from_config

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.2"):
        return settings_from_config(compose("localize", overrides=[f"data.path={data}", f"output_dir={out}",
                                                                   *FAST_LOCALIZE, *extra]))


def copy_tree(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst, symlinks=True)
    return dst


def run_cli(module: str, *args, cwd=None, env=None, timeout=600, prefix=()) -> subprocess.CompletedProcess:
    """``python -m <module> <args>`` as a user runs it (``prefix``: e.g. an ``unshare`` wrapper)."""
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", "WANDB_MODE": "offline", **(env or {})}
    return subprocess.run([*prefix, sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=full_env, timeout=timeout)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit status 2, no traceback, exactly one ``[occon] error:`` line naming every needle."""
    text = proc.stdout + proc.stderr
    assert proc.returncode == 2, f"exit {proc.returncode}\n{text[-3000:]}"
    assert "Traceback" not in text, text[-3000:]
    lines = [l for l in proc.stderr.splitlines() if l.startswith("[occon] error:")]
    assert len(lines) == 1, proc.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def pretrain_args(data: Path, out: Path, *extra, method: str = "mocov2_occon", store: Path | None = None,
                  fmt: str = "image_folder", steps: int = 2, batch: int = 4) -> list[str]:
    """A real YAML of the repository shrunk for CPU (as tests/e2e)."""
    kw = (["++method_kwargs.queue_size=16", "++method_kwargs.proj_hidden_dim=32"] if method == "mocov2_occon"
          else ["++method_kwargs.proj_hidden_dim=32", "++method_kwargs.pred_hidden_dim=32"])
    occon = ([f"++occon.store={store}", "++occon.oa_crop.enabled=true", "++occon.bg_mixup.enabled=true"]
             if store is not None else [])
    return ["--config-path", str(REPO / "scripts" / "pretrain" / "custom"), "--config-name", f"{method}.yaml",
            f"++data.train_path={data}", f"++data.format={fmt}", "++data.num_workers=0", "++dali.device=cpu",
            f"++optimizer.batch_size={batch}", f"++max_steps={steps}", "++max_epochs=3",
            "++augmentations.0.crop_size=32", "++accelerator=cpu", f"++checkpoint.dir={out}",
            "++wandb.enabled=false", "++backbone.name=resnet18", *kw, *occon, *extra]
