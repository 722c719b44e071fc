"""THE table of object-aware methods: one row per pretraining method of solo-learn (1.0.2 and main).

Plain data with no imports, so ``setup.py`` reads it (``runpy.run_path``) for the
``solo_learn.methods`` entry points without importing torch or solo-learn, and
:mod:`occon_plugin.methods` derives one class per row whose parent the installed host has::

    class <Class>(OcconMethodMixin, solo.methods.METHODS[<parent>])

Each ``<method>_occon`` is exactly its parent (same networks, loss, hooks, hyperparameters);
it only accepts the batches of the object-aware pipelines (:mod:`occon_plugin.augment`), where
OA-Crop and BG-Mixup ran before the standard augmentations of every view (paper §2.3), and
logs what they did. With the object-aware data off it trains exactly like the parent
(``tests/methods/test_methods.py`` checks that for every row).

Adding a method = one row here (+ a ``scripts/pretrain/custom/<name>.yaml``). A method of the
host that is neither a row nor in :data:`EXCLUDED` fails ``tests/methods/test_table.py``, so
a new solo-learn method is never skipped silently.

Families (``FAMILIES``) group methods whose training steps have the same shape; in
``tests/methods`` each family's representative is unmarked and the other methods carry
``@pytest.mark.slow`` (``./run test`` runs all; ``-m "not slow"`` only the representatives).
"""

# (object-aware method, parent in solo.methods.METHODS, class name, family)
ROWS = (
    ("all4one_occon", "all4one", "All4OneOccon", "contrastive"),
    ("barlow_twins_occon", "barlow_twins", "BarlowTwinsOccon", "redundancy_reduction"),
    ("byol_occon", "byol", "BYOLOccon", "distillation"),
    ("deepclusterv2_occon", "deepclusterv2", "DeepClusterV2Occon", "clustering"),
    ("dino_occon", "dino", "DINOOccon", "distillation"),
    ("mae_occon", "mae", "MAEOccon", "masked_modeling"),
    ("mocov2_occon", "mocov2plus", "MoCoV2Occon", "contrastive"),  # the paper's MoCo v2 (name kept)
    ("mocov3_occon", "mocov3", "MoCoV3Occon", "contrastive"),
    ("nnbyol_occon", "nnbyol", "NNBYOLOccon", "distillation"),
    ("nnclr_occon", "nnclr", "NNCLROccon", "contrastive"),
    ("nnsiam_occon", "nnsiam", "NNSiamOccon", "distillation"),
    ("ressl_occon", "ressl", "ReSSLOccon", "distillation"),
    ("simclr_occon", "simclr", "SimCLROccon", "contrastive"),
    ("simsiam_occon", "simsiam", "SimSiamOccon", "distillation"),
    ("swav_occon", "swav", "SwAVOccon", "clustering"),
    ("vibcreg_occon", "vibcreg", "VIbCRegOccon", "redundancy_reduction"),
    ("vicreg_occon", "vicreg", "VICRegOccon", "redundancy_reduction"),
    ("wmse_occon", "wmse", "WMSEOccon", "redundancy_reduction"),
)

# What each family means, and its representative (run by the default test suite).
FAMILIES = {
    "contrastive": ("positives against negatives (batch, queue or nearest-neighbour support set)",
                    "mocov2_occon"),
    "distillation": ("positive-only: a (momentum or stop-gradient) target network predicts the other view",
                     "byol_occon"),
    "redundancy_reduction": ("positive-only: invariance plus a decorrelation / whitening term", "barlow_twins_occon"),
    "clustering": ("positive-only: swapped or k-means cluster assignments; multi-crop capable", "swav_occon"),
    "masked_modeling": ("one view, reconstructed from a masked subset of its patches (ViT only)", "mae_occon"),
}

# Host METHODS entries that get no object-aware variant, each with the rule that excludes it.
EXCLUDED = {
    "base": "abstract base class of the host's methods, not a method",
    "linear": "linear evaluation of a frozen backbone, not pretraining",
    "supcon": ("supervised: its positives are the images that share a label, not views of one image, so "
               "OA-Crop / BG-Mixup positives have no role; the unlabelled data the plugin targets would "
               "give every image the same class"),
}

# BG-Mixup probability the shipped YAMLs use per family. The paper tuned it only for MoCo v2 (0.4) and
# BYOL (0.3) (§3.3, App. E.2: contrastive methods tolerate harder positives); the other families take
# the value of the paper's method they resemble. Untuned for them: sweep {0.2, 0.3, 0.4, 0.5} as the paper.
P_MIX = {"contrastive": 0.4, "distillation": 0.3, "redundancy_reduction": 0.3, "clustering": 0.3,
         "masked_modeling": 0.3}

ENTRY_POINT_GROUP = "solo_learn.methods"
MODULE = "occon_plugin.methods"


def parents() -> dict:
    """{object-aware method: parent method}."""
    return {name: parent for name, parent, _, _ in ROWS}


def entry_points() -> list:
    """``"<method> = occon_plugin.methods:<Class>"`` for every row (setup.py's ``solo_learn.methods``)."""
    return [f"{name} = {MODULE}:{cls}" for name, _, cls, _ in ROWS]
