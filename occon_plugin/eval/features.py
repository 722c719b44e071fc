"""Frozen features of an image folder: resize 256, centre crop 224 (configurable), images in [0, 1].

The model normalizes its input itself, with the constants it was trained with
(:class:`occon_plugin.models.FeatureModel`, from :func:`occon_plugin.models.load_feature_model`), so the
transform here has no Normalize. Unreadable images are skipped and counted (never fatal); labels come from
the class sub-folders.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2 as T

from occon_plugin.images import BadImageError, DatasetError, ImageList, list_images, load_image
from occon_plugin.images.loading import file_fingerprint


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
    folder: str = ""  # the class-folder tree they come from

    @cached_property
    def fingerprints(self) -> dict[str, str]:
        """``file_fingerprint`` (size + hash of the first and last 64 KiB) -> relative path, per kept image."""
        out = {}
        for rel in self.paths:
            try:
                out.setdefault(file_fingerprint(Path(self.folder) / rel), rel)
            except OSError:  # gone since it was read: it cannot be compared
                continue
        return out

    @property
    def present(self) -> list[str]:
        """The classes with at least one readable image here, in ``classes`` order."""
        have = set(np.unique(self.y).tolist())
        return [c for i, c in enumerate(self.classes) if i in have]


MIN_CLASSES = 2  # a one-class "classifier" scores 100 % whatever the features


def check_training_features(train: Features) -> None:
    """Refuse a training set with readable images of fewer than two classes (one class folder, or every image
    of the others unreadable): linear evaluation would report 100 % for any features. Raises
    :class:`~occon_plugin.images.DatasetError` naming the folder and the classes."""
    present = train.present
    if len(present) < MIN_CLASSES:
        empty = [c for c in train.classes if c not in present]
        raise DatasetError(
            f"{train.folder}: linear evaluation needs readable training images of at least {MIN_CLASSES} classes; "
            f"it has {len(present)} ({', '.join(present) or 'none'})"
            + (f"; no readable image in {', '.join(empty)} ({len(train.bad)} unreadable)" if empty else "")
            + ": a one-class classifier scores 100 % whatever the features. Give one sub-folder of images per class")


def compare_to_training(train: Features, evaluated: Features) -> Optional[str]:
    """Check a set to evaluate against the training set (same class names by construction:
    :func:`labelled_listing`). Raises :class:`~occon_plugin.images.DatasetError` when it has images of a
    class the training set has no readable image of (they could never be predicted right); returns a
    one-line note when it lacks some training classes (the accuracy is then over the classes it has) or
    holds training images (the same files, or byte-identical copies: the accuracy is then partly on the
    training set; e.g. ``test_dir`` = ``train_dir``), else None."""
    trained = set(train.present)
    never = [c for c in evaluated.present if c not in trained]
    if never:
        raise DatasetError(f"{evaluated.folder}: class(es) {never} have images to evaluate but no readable training "
                           f"image under {train.folder}, so they can never be predicted; add training images of them "
                           f"or remove them from {evaluated.folder}")
    notes = []
    lacking = [c for c in train.classes if c not in set(evaluated.present)]
    if lacking:
        notes.append(f"{evaluated.folder} has images of {len(evaluated.present)} of the {len(train.classes)} "
                     f"training classes (none of {', '.join(lacking)}): its accuracy is over those")
    shared = [rel for fp, rel in evaluated.fingerprints.items() if fp in train.fingerprints]
    if shared:
        notes.append(f"{len(shared)} of the {len(evaluated.paths)} images of {evaluated.folder} are training images "
                     f"of {train.folder} (the same files or copies, e.g. {shared[0]}): its accuracy is "
                     f"{'' if len(shared) == len(evaluated.paths) else 'partly '}measured on the training set, "
                     f"not on unseen images")
    return "; ".join(notes) or None


def labelled_listing(folder, classes: Optional[Sequence[str]] = None) -> tuple[ImageList, list[str], np.ndarray]:
    """List an ImageFolder-style tree; with ``classes`` given, its class names must be among them. Without,
    it is a training set: fewer than two class sub-folders (with images) raise :class:`DatasetError`."""
    listing = list_images(folder)
    if listing.classes is None:
        raise DatasetError(f"{folder}: expected one sub-folder per class (<folder>/<class>/<image>), "
                           "found images directly in the folder")
    if classes is None:
        if len(listing.classes) < MIN_CLASSES:
            raise DatasetError(f"{folder} has {len(listing.classes)} class sub-folder(s) with images "
                               f"({', '.join(listing.classes)}): linear evaluation needs at least {MIN_CLASSES} (a "
                               f"one-class classifier scores 100 % whatever the features)")
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
    """Run ``model`` (images (B,3,H,W) in [0,1] -> (B, D) features) in eval mode over a class-folder tree.

    Raises:
        DatasetError: no readable image under ``folder``.
    """
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
    return Features(np.concatenate(feats), labels[kept], classes, [listing.paths[i] for i in kept], bad, str(folder))
