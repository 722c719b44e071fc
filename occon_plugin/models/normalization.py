"""Input normalization constants: they belong to a model, so they live with its spec.

A model sees ``(x - mean) / std`` with ``x`` in [0, 1] (RGB). The constants are the ones the weights
were trained with:

* ImageNet (torchvision, timm ``IMAGENET_DEFAULT_*``, solo-learn main): mean (0.485, 0.456, 0.406),
  std (0.229, 0.224, 0.225). solo-learn 1.0.2 wrote 0.228 for the red std in some transforms; the
  difference is within the ImageNet statistics' own rounding, and the plugin uses 0.229 everywhere.
* EfficientNet-Lite: ``(pixel - 127) / 128`` on 0..255 pixels (the TF reference
  ``efficientnet/lite/efficientnet_lite_builder.py``: MEAN_RGB = [127.0]*3, STDDEV_RGB = [128.0]*3),
  i.e. mean 127/255, std 128/255 in [0, 1] units.
* CIFAR-10/100, STL-10: solo-learn's own tables (``solo/data/pretrain_dataloader.py``), used when a
  checkpoint's config names the dataset.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple


@dataclass(frozen=True)
class Normalization:
    """Per-channel ``mean`` and ``std`` in [0, 1] RGB units, and where they come from.

    Raises:
        ValueError: not 3 means and 3 positive stds."""

    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    source: str = ""

    def __post_init__(self):
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"normalization needs 3 means and 3 positive stds; got {self.mean}, {self.std}")
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    def as_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std), "source": self.source}

    @classmethod
    def from_dict(cls, d: dict) -> "Normalization":
        return cls(tuple(d["mean"]), tuple(d["std"]), str(d.get("source", "")))


IMAGENET = Normalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "imagenet")
IMAGENET_MEAN, IMAGENET_STD = IMAGENET.mean, IMAGENET.std
# What solo-learn 1.0.2's own transforms (argparse default ``--std``, DALI and classification loaders)
# trained with: read back for checkpoints written by 1.0.2's scripts, never used for new training.
IMAGENET_SOLO_1_0_2 = Normalization(IMAGENET_MEAN, (0.228, 0.224, 0.225), "imagenet (solo-learn 1.0.2 constants)")
EFFICIENTNET_LITE = Normalization((127.0 / 255.0,) * 3, (128.0 / 255.0,) * 3, "efficientnet-lite (x-127)/128")
CIFAR10 = Normalization((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), "cifar10")
CIFAR100 = Normalization((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), "cifar100")
STL10 = Normalization((0.4914, 0.4823, 0.4466), (0.247, 0.243, 0.261), "stl10")

# solo-learn's per-dataset constants (both generations); everything else is ImageNet's.
_BY_DATASET = {"cifar10": CIFAR10, "cifar100": CIFAR100, "stl10": STL10}


def normalization_for_dataset(dataset: Optional[str], mean: Optional[Sequence[float]] = None,
                              std: Optional[Sequence[float]] = None) -> Normalization:
    """What solo-learn normalizes ``dataset`` with (explicit ``mean``/``std`` from the config win)."""
    if mean is not None and std is not None:
        return Normalization(tuple(mean), tuple(std), f"config ({dataset or 'custom'})")
    return _BY_DATASET.get(str(dataset).lower(), IMAGENET) if dataset else IMAGENET


def plugin_pretrain_normalization(cfg=None) -> Normalization:
    """What the plugin's own pretraining pipelines (torchvision: ``host.build_view_transform``; DALI:
    ``augment/dali/standard_ops.py``) normalize with: ImageNet's constants, whatever ``data.dataset`` says.
    Recorded in the plugin's ``final.ckpt`` (``occon.normalization``) so a loader never has to guess."""
    return IMAGENET
