"""ContraCAM localization: the CAM engine (driver + pluggable score and weight functions) and its pieces.

Public API::

    from occon_plugin.localize import load_cam_model, contracam, run_cam, ContrastiveScore
    model = load_cam_model("efficientnet-lite0")          # CamModel (occon_plugin.models)
    masks = contracam(model, images01, iters=10).mask     # (B,1,H,W) in [0,1]
    # a CAM variant = a score function and/or a weight function on the same driver:
    masks = run_cam(model, images01, ClassifierScore(classifier), relu_mean_weights, iters=1).mask
    # ... and by name for occon-localize and the presets: one function plus one line in WEIGHTS / SCORES
    WEIGHTS["mine"] = my_weights            # then: occon-localize cam.weights=mine ...

Modules: ``settings`` (the command's typed settings and their checks), ``presets`` (named settings, in those
types), ``engine`` (driver, scores, :data:`SCORES`), ``cam`` (weight functions, :data:`WEIGHTS`, the map),
``score`` (Eq. 1),
``refine`` (CAM -> mask at the image size, CRF), ``finish`` (one image's store entry, in worker processes),
``runner`` (dataset -> store), ``crf``, ``boxes``, ``background``.
"""
from occon_plugin.localize.cam import (WEIGHTS, WeightFn, cam_from_activations, cam_from_weights,
                                       gradcam_plus_plus_weights, mean_weights, relu_mean_weights, weights_for)
from occon_plugin.localize.engine import (SCORES, CamResult, ClassifierScore, ContraCamResult, ContrastiveScore,
                                          ScoreFn, contracam, run_cam, score_gradient)
from occon_plugin.localize.score import contrastive_score
from occon_plugin.models import Activations, CamModel, load_cam_model

__all__ = ["WEIGHTS", "SCORES", "gradcam_plus_plus_weights", "WeightFn", "cam_from_activations", "cam_from_weights", "mean_weights", "relu_mean_weights",
           "weights_for", "CamResult", "ClassifierScore", "ContraCamResult", "ContrastiveScore", "ScoreFn",
           "contracam", "run_cam", "score_gradient", "contrastive_score", "Activations", "CamModel",
           "load_cam_model"]
