"""Nothing half-written: every file the plugin writes goes through :func:`atomic_path`.

Files get the permissions a plain ``open(path, "w")`` would give (``0o666`` minus the process
umask), not the ``0600`` of a temporary file, so a shared store or checkpoint folder stays
readable by the people the umask allows.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator

from occon_plugin.errors import OutputError

# OSErrors that mean "this output location cannot be written": named, one line, exit 2 in the CLIs.
OUTPUT_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR, errno.EEXIST,
                 errno.EFBIG}


def output_error(path, exc: OSError) -> OutputError:
    """``exc`` as an :class:`OutputError` naming ``path`` and what to do."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = f"free some space on the disk of {Path(path).parent}, or write to another disk"
    elif exc.errno == errno.EFBIG:
        hint = "the file-size limit of this process (ulimit -f) is smaller than the file: raise it"
    else:
        hint = "choose a writable output folder"
    return OutputError(f"cannot write {path}: {exc.strerror or exc} ({hint})")


def make_output_dir(folder) -> Path:
    """Create the output folder ``folder`` (and its parents) if needed; returns it as a Path.

    Raises:
        OutputError: it cannot be created, one line naming it: no permission, a read-only or full disk, a file
            in the way, or a place that holds no folders (``/proc/x``: ENOENT although the parents are made).
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if exc.errno in OUTPUT_ERRNOS or exc.errno == errno.ENOENT:
            raise output_error(folder, exc) from exc
        raise
    return folder


def _os_error_in(exc: BaseException) -> OSError | None:
    """The OSError ``exc`` is or was raised while handling (``__cause__`` / ``__context__`` chain)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _umask() -> int:
    """The process umask (read without changing it where /proc allows; else set-and-restore)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    """``0o666 & ~umask``: what ``open(path, "w")`` creates."""
    return 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_path(path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds it is fsync'ed, given the
    umask's permissions and renamed onto ``path`` (``os.replace``), when it fails it is removed.
    ``suffix`` (default: the target's own) lets libraries that pick a format by extension (PIL,
    OpenCV) write to it. A killed process leaves at most a hidden ``.<name>.*`` temp file beside
    the untouched target. Raises OSError (e.g. a read-only or full folder; ``OutputError`` when
    ``path`` is a folder) with the target named."""
    path = Path(path)
    if path.is_dir():  # os.replace would fail only after the whole file was written
        raise OutputError(f"cannot write {path}: it is a folder, not a file (give a file path: a new name, or "
                          f"a name inside that folder)")
    make_output_dir(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                   suffix=path.suffix if suffix is None else suffix)
    except OSError as exc:
        if exc.errno in OUTPUT_ERRNOS:
            raise output_error(path, exc) from exc
        raise
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno in OUTPUT_ERRNOS and not isinstance(exc, OutputError):
            raise output_error(path, exc) from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


_TEMP_NAME = re.compile(r"\.(?P<target>.+)\.[a-z0-9_]{8}(?P<suffix>\.[^./]+)?")


def is_temp_file(path) -> bool:
    """Whether ``path`` is named like a temporary file of :func:`atomic_path` (``.<target name>.<8 random
    characters><the target's suffix>``): what a killed writer can leave behind."""
    match = _TEMP_NAME.fullmatch(Path(path).name)
    return match is not None and Path(match["target"]).suffix == (match["suffix"] or "")


def remove_temp_files(folder) -> int:
    """Delete the leftover :func:`atomic_path` temporaries under ``folder`` (recursively); returns how
    many. Call it only while nothing writes to ``folder`` (e.g. when resuming a store)."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    for root, _, files in os.walk(folder):
        for name in files:
            if name.startswith(".") and is_temp_file(name):
                Path(root, name).unlink(missing_ok=True)
                removed += 1
    return removed


def atomic_torch_save(obj, path) -> Path:
    """``torch.save(obj)`` to ``path`` through :func:`atomic_path` (whole or not at all). The data goes
    through a Python file object, so a full disk or a file-size limit is an
    :class:`~occon_plugin.errors.OutputError` naming ``path`` and what to do (torch's own file writer
    reports only "file write failed" / "unexpected pos"); the previous file at ``path`` is untouched.
    Raises OutputError, or what ``torch.save`` raises for an object it cannot pickle."""
    import torch

    path = Path(path)
    with atomic_path(path) as tmp:
        try:
            with open(tmp, "wb") as fh:
                torch.save(obj, fh)
        except RuntimeError as exc:  # torch's writer wraps the OSError of the file object
            os_error = _os_error_in(exc)
            if os_error is None:
                raise
            # atomic_path removes the temp file and names ``path``
            raise OSError(os_error.errno, os_error.strerror, str(tmp)) from None
    return path


def atomic_write_bytes(path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path, text: str) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
    return Path(path)


def atomic_write_json(path, obj) -> Path:
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())
