"""Small helpers shared by the Hydra entry points."""
from __future__ import annotations

import os
import sys
from typing import Callable, List, Optional

import hydra
from omegaconf import DictConfig


def absolutize_config_path(argv: Optional[List[str]] = None) -> None:
    """Make ``--config-path``/``-cp`` relative to the current directory, as users expect.

    Hydra resolves a relative config path against the module that declares ``@hydra.main``,
    which for a console command is inside site-packages.
    """
    argv = sys.argv if argv is None else argv
    for i, arg in enumerate(list(argv)):
        for flag in ("--config-path", "-cp"):
            if arg == flag and i + 1 < len(argv):
                argv[i + 1] = os.path.abspath(argv[i + 1])
            elif arg.startswith(flag + "="):
                argv[i] = flag + "=" + os.path.abspath(arg.split("=", 1)[1])


def solo_style_main(job: Callable[[DictConfig], object]) -> Callable[[], None]:
    """A console entry point running ``job(cfg)`` on the YAML given by ``--config-path/--config-name``
    (solo-learn's command line); a :class:`~occon_plugin.config.ConfigError` exits 2 with its message."""
    from occon_plugin.config import ConfigError

    @hydra.main(version_base="1.2", config_path=None, config_name=None)
    def _hydra_main(cfg: DictConfig) -> None:
        try:
            job(cfg)
        except ConfigError as err:
            print(f"[occon] config error: {err}", file=sys.stderr)
            sys.exit(2)

    def main() -> None:
        absolutize_config_path()
        _hydra_main()

    return main
