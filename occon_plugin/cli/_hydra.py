"""Small helpers shared by the Hydra entry points."""
from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Callable, List, NoReturn, Optional, Sequence, Tuple, TypeVar

import hydra
from omegaconf import DictConfig

from occon_plugin.configs import packaged_config_dir, packaged_config_names  # noqa: F401  (used by the CLIs)
from occon_plugin.errors import USAGE_EXIT_CODE, ConfigError, OcconError, exit_code_of, format_error

F = TypeVar("F", bound=Callable)
INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, what shells report for a command stopped by Ctrl-C
TERMINATED_EXIT_CODE = 128 + signal.SIGTERM  # 143: what shells report for a command stopped by SIGTERM

# > 0 while a plugin entry point (exit_on_bad_input) is running: it reports bad input itself.
_PLUGIN_ENTRY_DEPTH = 0


class Terminated(BaseException):
    """SIGTERM (what a cluster scheduler sends before it kills a job) reached a plugin command.

    Raised in the main thread by the command's handler, like ``KeyboardInterrupt`` for Ctrl-C; a
    pretraining run turns it into a resumable checkpoint first (``occon_plugin.runs``). ``note`` says
    what was saved. A ``BaseException``: Lightning 1.9 swallows ``KeyboardInterrupt`` (and would then
    go on to save ``final.ckpt``), and ``except Exception`` blocks must not absorb it."""

    def __init__(self, signum: int = signal.SIGTERM, note: Optional[str] = None):
        super().__init__(signum, note)
        self.signum, self.note = int(signum), note


# While pretraining trains, SIGTERM and SIGINT (Ctrl-C) are taken by a callable (returns True) instead of being
# raised at once: the run stops at the next step boundary with a resumable checkpoint
# (occon_plugin.runs.stop_on_signal_callback). A second signal is raised at once.
_SIGNAL_TAKER: Optional[Callable[[int], bool]] = None


def _on_sigterm(signum, frame) -> None:
    taker = _SIGNAL_TAKER
    if taker is not None and taker(signum):
        return
    raise Terminated(signum)


def _on_sigint(signum, frame) -> None:
    taker = _SIGNAL_TAKER
    if taker is not None and taker(signum):
        return
    raise KeyboardInterrupt


@contextlib.contextmanager
def stop_signals_taken_by(taker: Callable[[int], bool]):
    """Within the block, SIGTERM and SIGINT call ``taker(signum)`` (True: it will stop the run itself)
    instead of raising :class:`Terminated` / ``KeyboardInterrupt`` in the main thread."""
    global _SIGNAL_TAKER
    previous, _SIGNAL_TAKER = _SIGNAL_TAKER, taker
    main = threading.current_thread() is threading.main_thread()
    old_int = signal.signal(signal.SIGINT, _on_sigint) if main else None
    try:
        yield
    finally:
        _SIGNAL_TAKER = previous
        if main:
            signal.signal(signal.SIGINT, old_int)


def _install_signal_handlers() -> list:
    """SIGTERM -> :class:`Terminated` (one line, exit 143, like Ctrl-C); a write beyond the process's
    file-size limit (``ulimit -f``) -> an ``OSError`` (EFBIG) that names the file, instead of SIGXFSZ
    killing the process with no message. Main thread only; returns what to restore."""
    if threading.current_thread() is not threading.main_thread():
        return []
    restore = []
    for signum, handler in ((signal.SIGTERM, _on_sigterm), (getattr(signal, "SIGXFSZ", None), signal.SIG_IGN)):
        if signum is None:
            continue
        restore.append((signum, signal.signal(signum, handler)))
    return restore


def _out_of_memory(exc: BaseException) -> Optional[str]:
    """``"CPU"`` / ``"GPU"`` when ``exc`` (or an exception it was raised from or while handling) is an
    allocator failure: torch's CPU allocator ("DefaultCPUAllocator: can't allocate memory"), CUDA's
    out-of-memory error, or Python's ``MemoryError``; else None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        name, text = type(exc).__name__, str(exc)
        if name == "OutOfMemoryError" or "CUDA out of memory" in text or "CUDA error: out of memory" in text:
            return "GPU"
        if isinstance(exc, MemoryError) or "DefaultCPUAllocator" in text or "can't allocate memory" in text:
            return "CPU"
        exc = exc.__cause__ or exc.__context__
    return None


def out_of_memory_error(exc: BaseException, cfg, batch_key: Optional[str], resumes: bool = False):
    """A :class:`~occon_plugin.errors.ResourceError` naming ``batch_key`` (and its value in ``cfg``)
    when ``exc`` is an out-of-memory failure (:func:`_out_of_memory`), else None."""
    where = _out_of_memory(exc)
    if where is None:
        return None
    from omegaconf import OmegaConf

    from occon_plugin.errors import ResourceError

    value = OmegaConf.select(cfg, batch_key, default=None) if (batch_key and OmegaConf.is_config(cfg)) else None
    what = f"{batch_key}={value}" if value is not None else (batch_key or "the batch size")
    first = " ".join(str(exc).split())[:160]
    return ResourceError(
        f"out of {where} memory ({type(exc).__name__}: {first}): a batch of {what} does not fit; lower "
        f"{batch_key or 'the batch size'}" + ("; run the same command again to resume" if resumes else ""))


def exit_on_bad_input(fn: Optional[F] = None, *, inputs: Sequence[str] = (), outputs: Sequence[str] = (),
                      specs: Sequence[str] = (), batch_key: Optional[str] = None, resumes: bool = False):
    """Run ``fn`` (a Hydra main taking the cfg); an :class:`~occon_plugin.errors.OcconError` (bad input)
    becomes one line on stderr and its exit status (2; 3 for a diverged training run). Put it *under*
    ``@hydra.main`` so Hydra never sees the error. Also, for every command:

    * Ctrl-C -> one line, exit 130; SIGTERM -> one line, exit 143 (:class:`Terminated`); a write past
      ``ulimit -f`` -> one line naming the file (SIGXFSZ ignored: the write fails with EFBIG);
    * the relative paths at the cfg keys ``inputs`` (and ``specs``, values that name a file or a
      model, where such a file exists) are made absolute against the launch folder, ``outputs``
      against the job's folder (they differ after ``hydra.job.chdir=true``; :func:`resolve_paths`);
    * an out-of-memory failure -> one line naming ``batch_key`` (``resumes``: the command resumes).

    Use bare (``@exit_on_bad_input``) or with keywords (``@exit_on_bad_input(inputs=(...), ...)``)."""
    if fn is None:
        return functools.partial(exit_on_bad_input, inputs=inputs, outputs=outputs, specs=specs,
                                 batch_key=batch_key, resumes=resumes)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        global _PLUGIN_ENTRY_DEPTH
        _PLUGIN_ENTRY_DEPTH += 1
        restore = _install_signal_handlers()
        cfg = args[0] if args and isinstance(args[0], DictConfig) else None
        try:
            if cfg is not None and (inputs or outputs or specs):
                resolve_paths(cfg, inputs=inputs, outputs=outputs, specs=specs)
            return fn(*args, **kwargs)
        except OcconError as err:
            print(format_error(err), file=sys.stderr)
            sys.exit(exit_code_of(err))
        except KeyboardInterrupt:  # Ctrl-C: every output is written atomically and runs resume
            print("[occon] interrupted: nothing is half-written; run the same command again to resume",
                  file=sys.stderr)
            sys.exit(INTERRUPTED_EXIT_CODE)
        except Terminated as term:
            if _launched_rank() == 0:  # DDP ranks stop together with the same note: rank 0 says it
                what = "interrupted" if term.signum == signal.SIGINT else "terminated"
                print(f"[occon] {what} ({signal.Signals(term.signum).name}): "
                      + (term.note or "nothing is half-written; run the same command again to resume"),
                      file=sys.stderr)
            sys.exit(128 + term.signum)
        except Exception as exc:  # noqa: BLE001 - only out-of-memory is translated; the rest is re-raised
            err = out_of_memory_error(exc, cfg, batch_key, resumes)
            if err is None:
                raise
            print(format_error(err), file=sys.stderr)
            sys.exit(exit_code_of(err))
        finally:
            _PLUGIN_ENTRY_DEPTH -= 1
            for signum, handler in restore:
                signal.signal(signum, handler)

    return wrapper  # type: ignore[return-value]


def _launched_rank() -> int:
    from occon_plugin.runs import launched_rank

    return launched_rank()


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


def resolve_paths(cfg: DictConfig, inputs: Sequence[str] = (), outputs: Sequence[str] = (),
                  specs: Sequence[str] = ()) -> None:
    """Make the relative path values of ``cfg`` absolute, in place: ``inputs`` against
    :func:`launch_dir` (what the user meant when typing them), ``specs`` likewise but only when such a
    file exists there (a model spec may be a name), ``outputs`` against the current folder (the job's
    folder with ``hydra.job.chdir=true``: Hydra's meaning of it). When the two folders differ one line
    names both. Absolute values, ``null`` and ``???`` are left alone."""
    from omegaconf import OmegaConf

    launch, here = launch_dir(), Path.cwd()

    def relative(key: str) -> Optional[str]:
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)  # ??? -> None
        if not isinstance(value, str) or not value or Path(value).expanduser().is_absolute() or "://" in value:
            return None
        return value

    changed = []
    for keys, base, must_exist in ((inputs, launch, False), (specs, launch, True), (outputs, here, False)):
        for key in keys:
            value = relative(key)
            if value is None:
                continue
            target = base / value
            if must_exist and not target.exists():
                continue
            OmegaConf.update(cfg, key, os.path.normpath(str(target)), merge=False)
            changed.append(key)
    if changed and launch.resolve() != here.resolve():
        print(f"[occon] hydra.job.chdir: relative inputs are read from the launch folder {launch}, outputs go "
              f"under the job folder {here}", file=sys.stderr)


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
    from occon_plugin.cli.overrides import _VALUE_FLAGS, unparsable_override

    overrides, skip_next = [], False
    for arg in argv:
        if skip_next:
            skip_next = False
        elif arg.startswith("-"):
            skip_next = arg in _VALUE_FLAGS
        else:
            overrides.append(arg)
    problem = unparsable_override(overrides)  # an unquoted '=' or non-ASCII value: name the key, say to quote it
    if problem:
        print(format_error(ConfigError(problem)), file=sys.stderr)
        sys.exit(USAGE_EXIT_CODE)
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


def solo_style_main(job: Callable[[DictConfig], object], kind: Optional[str] = None, **entry) -> Callable[[], None]:
    """A console entry point running ``job(cfg)`` on the YAML given by ``--config-path/--config-name``
    (solo-learn's command line; with ``kind``, ``--config-name <dataset>/<name>`` alone picks a YAML
    shipped with the package); bad input (:class:`~occon_plugin.errors.OcconError`) exits 2 with one line.
    ``entry``: the keywords of :func:`exit_on_bad_input` (path keys, batch key)."""

    @hydra.main(version_base="1.2", config_path=None, config_name=None)
    @exit_on_bad_input(**entry)
    def _hydra_main(cfg: DictConfig) -> None:
        job(cfg)

    def main() -> None:
        if kind is not None:
            use_packaged_config(kind)
        absolutize_config_path()
        exit_on_bad_composition()
        _hydra_main()

    return main
