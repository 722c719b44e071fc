"""Small helpers shared by the Hydra entry points."""
from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, TypeVar

import hydra
from omegaconf import DictConfig

from occon_plugin.configs import packaged_config_dir, packaged_config_names  # noqa: F401  (used by the CLIs)
from occon_plugin.errors import USAGE_EXIT_CODE, ConfigError, OcconError, exit_code_of, print_error
from occon_plugin.tracking import check_wandb_dir
from occon_plugin.train import process
# process-level facts shared with the training room (methods and runs must not import the CLI layer)
from occon_plugin.train.process import Terminated, launch_dir, launched_rank

F = TypeVar("F", bound=Callable)
INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, what shells report for a command stopped by Ctrl-C
TERMINATED_EXIT_CODE = 128 + signal.SIGTERM  # 143: what shells report for a command stopped by SIGTERM

# While pretraining trains, SIGTERM and SIGINT (Ctrl-C) are taken by a callable (returns True) instead of being
# raised at once: the run stops at the next step boundary with a resumable checkpoint
# (occon_plugin.train.runs.stop_on_signal_callback). A second signal is raised at once.
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

    Use bare (``@exit_on_bad_input``) or with keywords (``@exit_on_bad_input(inputs=(...), ...)``).

    Raises:
        SystemExit: always, when ``fn`` fails on bad input or is interrupted (the status above); other
            exceptions (bugs) propagate unchanged."""
    if fn is None:
        return functools.partial(exit_on_bad_input, inputs=inputs, outputs=outputs, specs=specs,
                                 batch_key=batch_key, resumes=resumes)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        process.enter_plugin_entry()
        restore = _install_signal_handlers()
        cfg = args[0] if args and isinstance(args[0], DictConfig) else None
        try:
            if cfg is not None and (inputs or outputs or specs):
                resolve_paths(cfg, inputs=inputs, outputs=outputs, specs=specs)
            if cfg is not None:
                check_wandb_dir(cfg)  # the user's WANDB_DIR: a bad one stops the command before its work
            return fn(*args, **kwargs)
        except OcconError as err:
            print_error(err)
            sys.exit(exit_code_of(err))
        except KeyboardInterrupt:  # Ctrl-C: every output is written atomically and runs resume
            print("[occon] interrupted: nothing is half-written; run the same command again to resume",
                  file=sys.stderr)
            sys.exit(INTERRUPTED_EXIT_CODE)
        except Terminated as term:
            if launched_rank() == 0:  # DDP ranks stop together with the same note: rank 0 says it
                what = "interrupted" if term.signum == signal.SIGINT else "terminated"
                print(f"[occon] {what} ({signal.Signals(term.signum).name}): "
                      + (term.note or "nothing is half-written; run the same command again to resume"),
                      file=sys.stderr)
            sys.exit(128 + term.signum)
        except Exception as exc:  # noqa: BLE001 - only out-of-memory is translated; the rest is re-raised
            err = out_of_memory_error(exc, cfg, batch_key, resumes)
            if err is None:
                raise
            print_error(err)
            sys.exit(exit_code_of(err))
        finally:
            process.leave_plugin_entry()
            for signum, handler in restore:
                signal.signal(signum, handler)

    return wrapper  # type: ignore[return-value]


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
        print_error(ConfigError(
            f"--config-name {name} is not a YAML shipped with occon-plugin; give --config-path <folder> for your "
            f"own, or one of: {', '.join(packaged_config_names(kind)) or '(none installed)'}"))
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
        print_error(ConfigError(problem))
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
        print_error(ConfigError(text))
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
