"""ContraCAM localisation: backbones split for CAM, contrastive score, CAM, iterative refinement."""
from occon_plugin.localize.backbones import CamModel, load_cam_model
from occon_plugin.localize.cam import cam_from_activations
from occon_plugin.localize.contracam import ContraCamResult, contracam
from occon_plugin.localize.score import contrastive_score

__all__ = ["CamModel", "load_cam_model", "cam_from_activations", "ContraCamResult", "contracam",
           "contrastive_score"]
