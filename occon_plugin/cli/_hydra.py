"""Small helpers shared by the Hydra entry points."""
from __future__ import annotations

import functools
import os
import sys
from typing import Callable, List, Optional, TypeVar

import hydra
from omegaconf import DictConfig

from occon_plugin.errors import USAGE_EXIT_CODE, OcconError, format_error

F = TypeVar("F", bound=Callable)


def exit_on_bad_input(fn: F) -> F:
    """Run ``fn``; an :class:`~occon_plugin.errors.OcconError` (bad input) becomes one line on
    stderr and exit status 2. Put it *under* ``@hydra.main`` so Hydra never sees the error."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except OcconError as err:
            print(format_error(err), file=sys.stderr)
            sys.exit(USAGE_EXIT_CODE)

    return wrapper  # type: ignore[return-value]


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
    (solo-learn's command line); bad input (:class:`~occon_plugin.errors.OcconError`) exits 2 with one line."""

    @hydra.main(version_base="1.2", config_path=None, config_name=None)
    @exit_on_bad_input
    def _hydra_main(cfg: DictConfig) -> None:
        job(cfg)

    def main() -> None:
        absolutize_config_path()
        _hydra_main()

    return main
