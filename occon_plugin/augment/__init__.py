"""Object-aware augmentations: OA-Crop, BG-Mixup, BG-HardMix (paper §2.3).

One semantics (``semantics``: decisions and shared helpers; ``config``: the ``occon`` section),
two pipelines: torchvision v2 (``torchvision_pipeline``, used by ``dataset``) and DALI (``dali``).
"""
from occon_plugin.augment.config import BgMixupConfig, OcconConfig, OcconConfigError, parse_occon_config
from occon_plugin.augment.semantics import (Partner, SamplePlan, box_to_pixels, choose_partner, mix_weights,
                                            plan_sample, sample_seed)

__all__ = ["BgMixupConfig", "OcconConfig", "OcconConfigError", "parse_occon_config", "Partner", "SamplePlan",
           "box_to_pixels", "choose_partner", "mix_weights", "plan_sample", "sample_seed"]
