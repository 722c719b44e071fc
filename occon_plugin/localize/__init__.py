"""ContraCAM localization: the CAM engine (driver + pluggable score and weight functions) and its pieces.

Public API::

    from occon_plugin.localize import load_cam_model, contracam, run_cam, ContrastiveScore
    model = load_cam_model("efficientnet-lite0")          # CamModel (occon_plugin.models)
    masks = contracam(model, images01, iters=10).mask     # (B,1,H,W) in [0,1]
    # a CAM variant = a score function and/or a weight function on the same driver:
    masks = run_cam(model, images01, ClassifierScore(classifier), relu_mean_weights, iters=1).mask

Modules: ``engine`` (driver, scores), ``cam`` (weight functions, the map), ``score`` (Eq. 1),
``refine`` (CAM -> mask at the image size, CRF), ``finish`` (one image's store entry, in worker processes),
``runner`` (dataset -> store), ``crf``, ``boxes``, ``background``.
"""
from occon_plugin.localize.cam import (WeightFn, cam_from_activations, cam_from_weights, mean_weights,
                                       relu_mean_weights, weights_for)
from occon_plugin.localize.engine import (CamResult, ClassifierScore, ContraCamResult, ContrastiveScore, ScoreFn,
                                          contracam, run_cam, score_gradient)
from occon_plugin.localize.score import contrastive_score
from occon_plugin.models import Activations, CamModel, load_cam_model

__all__ = ["WeightFn", "cam_from_activations", "cam_from_weights", "mean_weights", "relu_mean_weights",
           "weights_for", "CamResult", "ClassifierScore", "ContraCamResult", "ContrastiveScore", "ScoreFn",
           "contracam", "run_cam", "score_gradient", "contrastive_score", "Activations", "CamModel",
           "load_cam_model"]
