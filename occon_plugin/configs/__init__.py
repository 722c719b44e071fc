"""Where the YAMLs shipped with occon-plugin are (no Hydra, torch or solo-learn import).

* this folder holds the configs of the plugin's own CLIs (``localize.yaml``, ``eval_*.yaml``);
* :func:`packaged_config_dir` ``("pretrain")`` / ``("linear")``: the solo-learn style YAMLs
  (``<dataset>/<name>.yaml``): inside the installed package (``occon_plugin/configs/<kind>``, put there
  by setup.py) or, in a source checkout / editable install, the repository's ``scripts/<kind>``.

From a shell (e.g. for the host's own ``main_pretrain.py``)::

    python -m occon_plugin.configs             # every kind and its folder
    python -m occon_plugin.configs pretrain    # just the folder: --config-path "$(...)/coco"
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

KINDS = ("pretrain", "linear")
CLI_CONFIG_DIR = Path(__file__).resolve().parent


def packaged_config_dir(kind: str) -> Optional[Path]:
    """The folder of the YAMLs shipped for ``kind`` (``pretrain``, ``linear``), or None when none is
    installed: ``occon_plugin/configs/<kind>`` in a wheel install, ``scripts/<kind>`` in a source
    checkout / editable install."""
    package = CLI_CONFIG_DIR.parent
    for candidate in (package / "configs" / kind, package.parent / "scripts" / kind):
        if candidate.is_dir() and any(candidate.rglob("*.yaml")):
            return candidate
    return None


def packaged_config_names(kind: str) -> List[str]:
    """``<dataset>/<name>`` of every shipped YAML of ``kind`` (config groups excluded)."""
    root = packaged_config_dir(kind)
    if root is None:
        return []
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.glob("*/*.yaml"))
