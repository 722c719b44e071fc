"""The one model-loading path: spec or checkpoint -> backbone, projector, predictor, normalization, CAM split.

::

    from occon_plugin.models import load_model
    m = load_model("path/to/final.ckpt")      # or "efficientnet-lite0", a zoo name, "torchvision:resnet18"
    m.spec.name, m.spec.family, m.spec.normalization
    feats = m.feature_model()(images01)       # (B,F) pooled features, for linear eval / BG challenge
    cam = m.cam_model()                       # CamModel for ContraCAM / Grad-CAM (occon_plugin.localize)

A model family (builder, CAM split, default localization preset, normalization) is one
:class:`ModelFamily` registered with :func:`register_family` beside its builder (:mod:`.build`).

Used by localization, ``occon-eval-linear``, ``occon-eval-bgchallenge``, the zoo and ``occon-linear``.
No solo-learn import anywhere in this package.
"""
from occon_plugin.models.build import (ACCEPTED_SPECS, DEFAULT_SPEC, FeatureModel, LoadedModel, load_cam_model,
                                       load_feature_model, load_model, model_from_record)
from occon_plugin.models.cam import Activations, CamModel
from occon_plugin.models.checkpoint import FORMAT, read_checkpoint, save_record
from occon_plugin.models.layouts import CHECKPOINT_LAYOUTS, SOLO_CHECKPOINT_LAYOUTS, strip_wrapper_prefixes
from occon_plugin.models.normalization import (EFFICIENTNET_LITE, IMAGENET, IMAGENET_MEAN, IMAGENET_STD,
                                               Normalization)
from occon_plugin.models.spec import FAMILIES, ModelFamily, ModelSpec, register_family

__all__ = ["ACCEPTED_SPECS", "DEFAULT_SPEC", "FeatureModel", "LoadedModel", "load_cam_model", "load_feature_model",
           "load_model", "model_from_record", "Activations", "CamModel", "FORMAT", "read_checkpoint", "save_record",
           "CHECKPOINT_LAYOUTS", "SOLO_CHECKPOINT_LAYOUTS", "strip_wrapper_prefixes", "EFFICIENTNET_LITE", "IMAGENET",
           "IMAGENET_MEAN", "IMAGENET_STD", "Normalization", "FAMILIES", "ModelFamily",
           "ModelSpec", "register_family"]
