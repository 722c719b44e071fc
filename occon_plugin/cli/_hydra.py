"""Small helpers shared by the Hydra entry points."""
from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Callable, List, NoReturn, Optional, Tuple, TypeVar

import hydra
from omegaconf import DictConfig

from occon_plugin.configs import packaged_config_dir, packaged_config_names  # noqa: F401  (used by the CLIs)
from occon_plugin.errors import USAGE_EXIT_CODE, ConfigError, OcconError, format_error

F = TypeVar("F", bound=Callable)
INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, what shells report for a command stopped by Ctrl-C

# > 0 while a plugin entry point (exit_on_bad_input) is running: it reports bad input itself.
_PLUGIN_ENTRY_DEPTH = 0


def exit_on_bad_input(fn: F) -> F:
    """Run ``fn``; an :class:`~occon_plugin.errors.OcconError` (bad input) becomes one line on
    stderr and exit status 2. Put it *under* ``@hydra.main`` so Hydra never sees the error."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        global _PLUGIN_ENTRY_DEPTH
        _PLUGIN_ENTRY_DEPTH += 1
        try:
            return fn(*args, **kwargs)
        except OcconError as err:
            print(format_error(err), file=sys.stderr)
            sys.exit(USAGE_EXIT_CODE)
        except KeyboardInterrupt:  # Ctrl-C: every output is written atomically and runs resume
            print("[occon] interrupted: nothing is half-written; run the same command again to resume",
                  file=sys.stderr)
            sys.exit(INTERRUPTED_EXIT_CODE)
        finally:
            _PLUGIN_ENTRY_DEPTH -= 1

    return wrapper  # type: ignore[return-value]


def in_foreign_hydra_app() -> bool:
    """Running inside a Hydra app that is not one of the plugin's entry points (solo-learn's own
    ``main_pretrain.py``)."""
    if _PLUGIN_ENTRY_DEPTH > 0 or "hydra" not in sys.modules:
        return False
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.initialized()


def stop_run(err: OcconError) -> NoReturn:
    """Stop a run for bad input from code the host calls (a method's constructor or Lightning hook).

    Inside the host's own Hydra script (solo-learn main's ``main_pretrain.py``), whose error handler
    would print a traceback, this prints the one line of the plugin's CLIs and exits with status 2.
    Everywhere else (the plugin's entry points, library use, tests) it raises ``err``.
    """
    if in_foreign_hydra_app():
        print(format_error(err), file=sys.stderr)
        sys.exit(USAGE_EXIT_CODE)
    raise err


def current_plugin_command(script: str = "occon-pretrain") -> str:
    """``occon-pretrain --config-path <dir> --config-name <name> <overrides>`` for the YAML and
    overrides of the running Hydra app (the host's script), or a template when there is none."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if "hydra" in sys.modules and HydraConfig.initialized():
            hc = HydraConfig.get()
            path = next((src.path for src in hc.runtime.config_sources
                         if src.provider == "main" and src.schema == "file"), None)
            name = hc.job.config_name
            if path and name:
                overrides = " ".join(str(o) for o in hc.overrides.task)
                return f"{script} --config-path {path} --config-name {name}" + (f" {overrides}" if overrides else "")
    except Exception:  # noqa: BLE001 - only a hint in a message
        pass
    return f"{script} --config-path <folder of your YAML> --config-name <YAML name>"


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


def _flag_value(argv: List[str], flags) -> Tuple[Optional[int], Optional[str]]:
    for i, arg in enumerate(argv):
        for flag in flags:
            if arg == flag and i + 1 < len(argv):
                return i, argv[i + 1]
            if arg.startswith(flag + "="):
                return i, arg.split("=", 1)[1]
    return None, None


def use_packaged_config(kind: str, argv: Optional[List[str]] = None) -> None:
    """``--config-name coco/mocov2_occon`` without ``--config-path``: the YAML shipped with the
    package (works from a wheel install, no clone). Rewrites ``argv`` to Hydra's
    ``--config-path <packaged>/coco --config-name mocov2_occon``; an unknown name exits 2 with the
    list of shipped names."""
    argv = sys.argv if argv is None else argv
    if _flag_value(argv, ("--config-path", "-cp"))[1] is not None:
        return
    i, name = _flag_value(argv, ("--config-name", "-cn"))
    if name is None:
        return
    root = packaged_config_dir(kind)
    rel = name[:-5] if name.endswith(".yaml") else name
    target = (root / f"{rel}.yaml") if root is not None else None
    if target is None or not target.is_file():
        print(format_error(ConfigError(
            f"--config-name {name} is not a YAML shipped with occon-plugin; give --config-path <folder> for your "
            f"own, or one of: {', '.join(packaged_config_names(kind)) or '(none installed)'}")), file=sys.stderr)
        sys.exit(USAGE_EXIT_CODE)
    del argv[i:i + (1 if "=" in argv[i] else 2)]
    argv[1:1] = ["--config-path", str(target.parent), "--config-name", target.stem]


def exit_on_bad_composition(argv: Optional[List[str]] = None) -> None:
    """Compose ``--config-path/--config-name`` with the command line's overrides as Hydra will; a
    misspelled key (``max_epoch=1``) or a malformed override becomes one line + exit 2 instead of
    Hydra's multi-line message with exit 1. Help, info and multirun command lines are left to Hydra."""
    argv = sys.argv[1:] if argv is None else argv
    _, path = _flag_value(argv, ("--config-path", "-cp"))
    _, name = _flag_value(argv, ("--config-name", "-cn"))
    if path is None or name is None or any(a.split("=")[0] in _LEFT_TO_HYDRA for a in argv):
        return
    from occon_plugin.cli.overrides import _VALUE_FLAGS

    overrides, skip_next = [], False
    for arg in argv:
        if skip_next:
            skip_next = False
        elif arg.startswith("-"):
            skip_next = arg in _VALUE_FLAGS
        else:
            overrides.append(arg)
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    try:
        with initialize_config_dir(config_dir=str(path), version_base="1.2"):
            compose(config_name=name[:-5] if name.endswith(".yaml") else name, overrides=overrides)
    except HydraException as exc:
        text = " ".join(str(exc).split())
        if text.startswith("Could not override '"):
            key = text.split("'")[1]
            text = f"unknown key {key!r} in {name} (misspelled? a new key is added with ++{key}=...)"
        print(format_error(ConfigError(text)), file=sys.stderr)
        sys.exit(USAGE_EXIT_CODE)


_LEFT_TO_HYDRA = {"--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c", "--multirun", "-m", "--run", "-r",
                  "--shell-completion", "-sc", "--version"}


def solo_style_main(job: Callable[[DictConfig], object], kind: Optional[str] = None) -> Callable[[], None]:
    """A console entry point running ``job(cfg)`` on the YAML given by ``--config-path/--config-name``
    (solo-learn's command line; with ``kind``, ``--config-name <dataset>/<name>`` alone picks a YAML
    shipped with the package); bad input (:class:`~occon_plugin.errors.OcconError`) exits 2 with one line."""

    @hydra.main(version_base="1.2", config_path=None, config_name=None)
    @exit_on_bad_input
    def _hydra_main(cfg: DictConfig) -> None:
        job(cfg)

    def main() -> None:
        if kind is not None:
            use_packaged_config(kind)
        absolutize_config_path()
        exit_on_bad_composition()
        _hydra_main()

    return main
