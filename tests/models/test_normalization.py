"""Normalization lives with the model spec: one ImageNet constant, and EfficientNet-Lite0 gets what it was trained with."""
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from occon_plugin.models import EFFICIENTNET_LITE, IMAGENET, FeatureModel, load_model

PACKAGE = Path(__file__).resolve().parents[2] / "occon_plugin"
# ImageNet ids of what 7 of the bundled photos show (torchvision's ImageNet class index)
LABELLED = {"chelsea": (281, 282, 283, 284, 285),  # tabby, tiger cat, Persian, Siamese, Egyptian cat
            "coffee": (967, 968, 504),              # espresso, cup, coffee mug
            "rocket": (657, 744, 812),              # missile, projectile, space shuttle
            "motorcycle_left": (665, 670), "motorcycle_right": (665, 670),  # moped, motor scooter
            "camera": (872, 759),                   # tripod, reflex camera (the cameraman photo)
            "clock": (892, 409)}                    # wall clock, analog clock


def test_imagenet_constants_are_written_once():
    """0.485 / 0.228 / 0.229 appear only in models/normalization.py (0.228: solo-learn 1.0.2's own runs)."""
    hits = [f"{p.relative_to(PACKAGE)}:{i}" for p in PACKAGE.rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1)
            if re.search(r"0\.(485|228|229)\b", line) and p.name != "normalization.py"]
    assert hits == [], hits


def _centre_crop(photo: np.ndarray) -> torch.Tensor:
    photo = np.stack([photo] * 3, -1) if photo.ndim == 2 else photo[..., :3]
    x = torch.from_numpy(np.ascontiguousarray(photo)).permute(2, 0, 1)[None].float() / 255
    h, w = x.shape[-2:]
    scale = 256 / min(h, w)
    x = F.interpolate(x, size=(round(h * scale), round(w * scale)), mode="bilinear", antialias=True)
    h, w = x.shape[-2:]
    top, left = (h - 224) // 2, (w - 224) // 2
    return x[..., top:top + 224, left:left + 224].clamp(0, 1)


def test_lite0_is_normalized_as_it_was_trained():
    """(x - 127) / 128 (the TF EfficientNet-Lite recipe) beats ImageNet mean/std on every labelled photo:
    the ImageNet probability of what the photo shows is higher, and top-1 is right at least as often."""
    from occon_plugin.eval.baselines import load_imagenet_classifier
    from occon_plugin.images.bundled import _skimage_photo

    loaded, classifier = load_model("efficientnet-lite0"), load_imagenet_classifier()
    assert loaded.spec.normalization == EFFICIENTNET_LITE
    photos = {name: _centre_crop(_skimage_photo(name)) for name in LABELLED}
    results = {}
    for norm in (EFFICIENTNET_LITE, IMAGENET):
        features = FeatureModel(loaded.backbone, norm).eval()
        logp, top1 = [], 0
        for name, ids in LABELLED.items():
            with torch.no_grad():
                p = classifier(features(photos[name])).softmax(1)[0]
            logp.append(float(p[list(ids)].sum().log()))
            top1 += int(p.argmax()) in ids
        results[norm.source] = (np.array(logp), top1)
    lite, imagenet = results[EFFICIENTNET_LITE.source], results[IMAGENET.source]
    assert (lite[0] > imagenet[0]).all(), (lite, imagenet)
    assert lite[1] >= imagenet[1] and lite[1] >= 6, (lite, imagenet)
