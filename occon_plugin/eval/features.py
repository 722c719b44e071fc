"""Frozen features of an image folder: resize 256, centre crop 224 (configurable), images in [0, 1].

The model normalizes its input itself, with the constants it was trained with
(:class:`occon_plugin.models.FeatureModel`, from :func:`occon_plugin.models.load_feature_model`), so the
transform here has no Normalize. Unreadable images are skipped and counted (never fatal); labels come from
the class sub-folders.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2 as T

from occon_plugin.images import BadImageError, DatasetError, ImageList, list_images, load_image


def center_crop_transform(resize: int = 256, crop: int = 224):
    """PIL/uint8 image -> float (3, crop, crop) in [0, 1]: shorter side to ``resize`` (antialiased), centre crop."""
    return T.Compose([T.ToImage(), T.Resize(resize, antialias=True), T.CenterCrop(crop),
                      T.ToDtype(torch.float32, scale=True)])


class _Images(Dataset):
    def __init__(self, listing: ImageList, transform):
        self.listing, self.transform = listing, transform

    def __len__(self):
        return len(self.listing)

    def __getitem__(self, i):
        try:
            image = load_image(self.listing.root, self.listing.paths[i])
        except BadImageError as err:
            return None, i, str(err)
        return self.transform(image), i, None


def _collate(batch):
    good = [(x, i) for x, i, _ in batch if x is not None]
    bad = [err for _, _, err in batch if err is not None]
    xs = torch.stack([x for x, _ in good]) if good else None
    return xs, [i for _, i in good], bad


@dataclass
class Features:
    X: np.ndarray  # (N, D) float32
    y: np.ndarray  # (N,) int64 class index in ``classes``
    classes: list[str]
    paths: list[str]
    bad: list[str]  # messages of skipped images


def labelled_listing(folder, classes: Optional[Sequence[str]] = None) -> tuple[ImageList, list[str], np.ndarray]:
    """List an ImageFolder-style tree; with ``classes`` given, its class names must be among them."""
    listing = list_images(folder)
    if listing.classes is None:
        raise DatasetError(f"{folder}: expected one sub-folder per class (<folder>/<class>/<image>), "
                           "found images directly in the folder")
    if classes is None:
        return listing, list(listing.classes), np.asarray(listing.labels, dtype=np.int64)
    unknown = sorted(set(listing.classes) - set(classes))
    if unknown:
        raise DatasetError(f"{folder}: classes {unknown} are not among the training classes {list(classes)}")
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[listing.classes[l]] for l in listing.labels], dtype=np.int64)
    return listing, list(classes), y


@torch.no_grad()
def extract_features(model: torch.nn.Module, folder, classes: Optional[Sequence[str]] = None,
                     resize: int = 256, crop: int = 224, batch_size: int = 64, num_workers: int = 0,
                     device: str = "cpu", progress: bool = True) -> Features:
    """Run ``model`` (images (B,3,H,W) in [0,1] -> (B, D) features) in eval mode over a class-folder tree."""
    from tqdm import tqdm

    listing, classes, labels = labelled_listing(folder, classes)
    loader = DataLoader(_Images(listing, center_crop_transform(resize, crop)), batch_size=batch_size,
                        num_workers=num_workers, collate_fn=_collate)
    model.eval().to(device)
    feats, kept, bad = [], [], []
    for xs, idx, errors in tqdm(loader, desc=f"features {listing.root.name}", disable=not progress):
        bad.extend(errors)
        if xs is None:
            continue
        out = model(xs.to(device))
        feats.append(out.flatten(1).float().cpu().numpy())
        kept.extend(idx)
    if not feats:
        raise DatasetError(f"no readable image under {folder} ({len(bad)} bad, e.g. {bad[:2]})")
    return Features(np.concatenate(feats), labels[kept], classes, [listing.paths[i] for i in kept], bad)
