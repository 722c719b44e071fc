"""Item 1: one decode rule for every mode, and DALI decodes exactly the same pixels for every file."""
from __future__ import annotations

import numpy as np
import pytest
from nvidia.dali import fn, pipeline_def, types

from occon_plugin.augment.dali.source import SampleRecord, image_bytes
from occon_plugin.images import inspect_image, load_image, load_pil_image


def dali_decode(encoded: list[np.ndarray], device: str = "cpu") -> list[np.ndarray]:
    """DALI's decoder as the training pipeline calls it: ``cpu`` (``device_id=None``) or ``gpu``
    (the ``mixed`` decoder, nvJPEG)."""
    @pipeline_def(batch_size=len(encoded), num_threads=1, device_id=None if device == "cpu" else 0)
    def pipe():
        data = fn.external_source(source=lambda: encoded, batch=True)
        return fn.decoders.image(data, device="cpu" if device == "cpu" else "mixed", output_type=types.RGB)

    p = pipe()
    p.build()
    (out,) = p.run()
    out = out.as_cpu() if device != "cpu" else out
    return [np.asarray(out[i]) for i in range(len(encoded))]


@pytest.mark.kind("decode.16bit")
def test_16_bit_pngs_are_scaled_not_clipped(mixed):
    for name in ("g16_grey.png", "h16_colour.png", "i_int32.tif"):
        got = load_image(mixed.root, name)
        np.testing.assert_array_equal(got, mixed.expected[name], err_msg=name)
    grey = load_image(mixed.root, "g16_grey.png")
    assert grey.min() == 0 and grey.max() == 255 and 0.45 < (grey > 127).mean() < 0.55  # a ramp, not 99 % white


@pytest.mark.kind("decode.modes")
def test_every_mode_follows_the_documented_rule(mixed):
    for name, want in mixed.expected.items():
        np.testing.assert_array_equal(load_image(mixed.root, name), want, err_msg=name)
    # rule 2 = PIL's convert("RGB") = torchvision's ImageFolder loader, for the 8-bit modes
    from PIL import Image, ImageOps

    for name in ("k_la.png", "l_rgba.png", "m_palette_transparent.png", "n_cmyk.jpg", "o_1bit.png", "a_rgb.jpg"):
        with Image.open(mixed.root / name) as img:
            ref = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
        np.testing.assert_array_equal(load_image(mixed.root, name), ref, err_msg=name)
    pil = load_pil_image(mixed.root / "g16_grey.png")  # the ImageFolder loader of the linear CLIs
    assert pil.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(pil), mixed.expected["g16_grey.png"])


@pytest.mark.kind("decode.modes")
@pytest.mark.kind("decode.16bit")
@pytest.mark.kind("decode.exif")
@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_dali_decodes_every_file_to_the_same_pixels(mixed, device):
    """What the DALI pipeline feeds its decoder (the file, or the rule's pixels for files it would
    decode differently) decodes to exactly ``load_image``'s array, for every good file."""
    if device == "gpu":
        import torch

        if not torch.cuda.is_available():
            pytest.skip("no CUDA device: DALI's GPU decoder (nvJPEG) is compared only on a GPU machine")
    records, natives = [], []
    for name in mixed.good:
        info = inspect_image(mixed.root, name)
        natives.append(info.dali_native)
        records.append(SampleRecord(mixed.root / name, info.width, info.height, decode_here=not info.dali_native))
    decoded = dali_decode([image_bytes(r) for r in records], device)
    for name, got in zip(mixed.good, decoded):
        np.testing.assert_array_equal(got, load_image(mixed.root, name), err_msg=name)
    # most files go to DALI as they are; the 16-bit, 32-bit and float ones are decoded by the rule
    native = dict(zip(mixed.good, natives))
    assert not native["g16_grey.png"] and not native["h16_colour.png"] and not native["j_float.tif"]
    assert native["a_rgb.jpg"] and native["p_exif6.jpg"] and native["l_rgba.png"]


@pytest.mark.kind("decode.exif")
def test_exif_orientation_applied_to_size_and_pixels(mixed):
    info = inspect_image(mixed.root, "p_exif6.jpg")
    assert (info.width, info.height) == (48, 40) and info.orientation == 6  # stored 40 x 48, shown rotated
    assert load_image(mixed.root, "p_exif6.jpg").shape == (40, 48, 3)
