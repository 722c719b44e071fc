"""The one error root of occon-plugin.

Every error raised for *bad input* (a config key, a file, a store, a checkpoint, ground truth)
derives from :class:`OcconError`. The command-line entry points catch it and print one line
``[occon] error: <message>`` to stderr and exit with status 2 (a usage error; 3 for a training run
that diverged, :class:`TrainingDivergedError`); anything else is a bug and keeps its traceback.
Messages name the key or file and say what to do.

Subclasses keep a second, built-in base (``ValueError``, ``RuntimeError``) where callers relied on
it before this module existed.
"""
from __future__ import annotations

import sys

USAGE_EXIT_CODE = 2
DIVERGED_EXIT_CODE = 3  # training stopped at a non-finite loss (TrainingDivergedError)


class OcconError(Exception):
    """Bad input: the message names the key or file and what to do. CLIs: one line, exit 2."""


class ConfigError(OcconError, ValueError):
    """A config key is missing or holds a bad value; the message names the key."""


class DataError(OcconError):
    """A dataset, image folder, annotation file or store that cannot be used as it is."""


class CheckpointError(OcconError, ValueError):
    """A checkpoint that cannot be read or mapped to a supported model."""


class MissingDependencyError(OcconError, ImportError):
    """An optional package the requested feature needs is not installed; the message says what to install."""


class ResourceError(OcconError, RuntimeError):
    """A machine resource ran out or a worker process died (memory, processes); the message says
    what to do (e.g. rerun to resume with fewer workers)."""


class TrainingDivergedError(OcconError, ArithmeticError):
    """Training produced a non-finite loss (NaN/Inf) or non-finite weights: the run stops before the
    weights are updated or saved; the message names the step, the loss and the likely key. CLIs:
    one line, exit :data:`DIVERGED_EXIT_CODE` (3), so scripts can tell it from a usage error."""

    exit_code = DIVERGED_EXIT_CODE


class OutputError(OcconError, OSError):
    """An output file or folder that cannot be written (read-only, full, no permission); the
    message names it. Nothing half-written is left behind (``occon_plugin.atomic``)."""


def examples(items, total=None, show: int = 5, sep: str = ", ") -> str:
    """``"a, b, c, ... (+7 more)"``: the first ``show`` of ``items`` (any iterable of str) and how many more
    (``total``: the full count when ``items`` holds only the first few). For naming files/keys in messages."""
    items = list(items)
    total = len(items) if total is None else total
    more = f", ... (+{total - show} more)" if total > show else ""
    return sep.join(items[:show]) + more


def exit_code_of(err: OcconError) -> int:
    """The exit status a CLI ends with for ``err``: its class's ``exit_code``, else 2 (usage error)."""
    return int(getattr(err, "exit_code", USAGE_EXIT_CODE))


def format_error(err: BaseException) -> str:
    """The one-line form the CLIs print (newlines folded)."""
    text = " ".join(str(err).split()) or type(err).__name__
    return f"[occon] error: {text}"


def print_error(err: BaseException, file=None) -> None:
    """Print :func:`format_error` of ``err`` to ``file`` (stderr) as one write of the whole line.

    ``print(line)`` writes the text and its newline separately and stderr is write-through, so the DDP ranks
    of one torchrun, which share one stderr, could splice their lines into one; one write of a line shorter
    than the pipe's atomic size (4 KiB on Linux) cannot be split.
    """
    stream = sys.stderr if file is None else file
    stream.write(format_error(err) + "\n")
    stream.flush()
