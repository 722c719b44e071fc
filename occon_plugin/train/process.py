"""Process-level facts and exits shared by the plugin's entry points (``occon_plugin.cli``) and the code the
host calls (the object-aware methods' hooks, the run folders): the launch folder, the launcher's rank,
whether a plugin entry point or a foreign Hydra app (solo-learn's own ``main_pretrain.py``) is running,
and how such code stops a run for bad input. Standard library only (plus Hydra, when it is running):
the methods and the run folders import this instead of the CLI layer.
"""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import NoReturn, Optional

from occon_plugin.errors import OcconError, exit_code_of, print_error

# > 0 while a plugin entry point (exit_on_bad_input) is running: it reports bad input itself.
_ENTRY_DEPTH = 0




def enter_plugin_entry() -> None:
    """A plugin entry point (``occon_plugin.cli._hydra.exit_on_bad_input``) starts: it reports bad input itself."""
    global _ENTRY_DEPTH
    _ENTRY_DEPTH += 1


def leave_plugin_entry() -> None:
    global _ENTRY_DEPTH
    _ENTRY_DEPTH -= 1


class Terminated(BaseException):
    """SIGTERM (what a cluster scheduler sends before it kills a job) reached a plugin command.

    Raised in the main thread by the command's handler, like ``KeyboardInterrupt`` for Ctrl-C; a
    pretraining run turns it into a resumable checkpoint first (``occon_plugin.train.runs``). ``note`` says
    what was saved. A ``BaseException``: Lightning 1.9 swallows ``KeyboardInterrupt`` (and would then
    go on to save ``final.ckpt``), and ``except Exception`` blocks must not absorb it."""

    def __init__(self, signum: int = signal.SIGTERM, note: Optional[str] = None):
        super().__init__(signum, note)
        self.signum, self.note = int(signum), note


def launch_dir() -> Path:
    """The folder the command was started in (Hydra's ``runtime.cwd``): after ``hydra.job.chdir=true``
    the process runs in the job's output folder instead."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return Path(HydraConfig.get().runtime.cwd)
    except Exception:  # noqa: BLE001 - no Hydra app: the current folder
        pass
    return Path.cwd()



def launched_rank() -> int:
    """This process's global rank as its launcher set it (torchrun ``RANK``; Lightning's own DDP
    launcher ``NODE_RANK`` / ``LOCAL_RANK``; SLURM ``SLURM_PROCID``), 0 for a plain process. Read from
    the environment: the process group does not exist yet when the run folder is decided."""
    for key in ("RANK", "SLURM_PROCID"):
        if os.environ.get(key, "").isdigit() and (key == "RANK" or int(os.environ.get("SLURM_NTASKS", "1")) > 1):
            return int(os.environ[key])
    local, node = os.environ.get("LOCAL_RANK", "0"), os.environ.get("NODE_RANK", "0")
    return int(local) + int(node) if local.isdigit() and node.isdigit() else 0


def in_foreign_hydra_app() -> bool:
    """Running inside a Hydra app that is not one of the plugin's entry points (solo-learn's own
    ``main_pretrain.py``)."""
    if _ENTRY_DEPTH > 0 or "hydra" not in sys.modules:
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
        print_error(err)
        sys.exit(exit_code_of(err))
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
