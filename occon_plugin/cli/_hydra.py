"""Small helpers shared by the Hydra entry points."""
from __future__ import annotations

import os
import sys
from typing import List, Optional


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
