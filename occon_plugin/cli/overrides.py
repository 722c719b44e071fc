"""Check command-line overrides against a CLI's packaged YAML before Hydra sees them.

Hydra rejects an unknown key or a malformed override with a multi-line message and exit status 1;
the plugin's CLIs report bad input as one line ``[occon] error: ...`` with exit status 2. This
parses the overrides with Hydra's own parser and looks every plain ``key=value`` up in the YAML.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

from occon_plugin.errors import USAGE_EXIT_CODE, ConfigError, print_error

_SHOW = 12
# keys that moved: old name -> new name (named in the error instead of a plain "unknown key")
_CRF_PARAMS = ("iters", "gauss_sxy", "gauss_compat", "bilateral_sxy", "bilateral_srgb", "bilateral_compat", "clip",
               "max_pixels")
RENAMED = {"crf.workers": "post_workers", "crf.resolution": "refine.resolution",
           **{f"crf.{k}": f"refine.crf.{k}" for k in _CRF_PARAMS}}
# keys replaced by another key with other values: old name -> (new name, {old value: new value})
REPLACED = {"crf.enabled": ("refine.method", {True: "crf", False: "none"})}
_VALUE_FLAGS = {"--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--cfg", "-c", "--package",
                "-p", "--info", "-i", "--experimental-rerun"}


def _has_key(cfg, key: str) -> bool:
    """``key`` (dotted) exists in ``cfg``, also when its value is ``???`` (MISSING)."""
    from omegaconf import OmegaConf

    node = cfg
    for part in key.split("."):
        if not OmegaConf.is_dict(node) or part not in list(node.keys()):
            return False
        node = node._get_node(part)
    return True


def _type_problem(cfg, key: str, override) -> Optional[str]:
    """Why the value of ``override`` does not fit the type of ``key``'s value in the YAML (a bool,
    int or float default), or None. ``null`` and keys whose YAML value is null, a string or a
    container are left to the CLI."""
    from omegaconf import OmegaConf

    default = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
    try:
        value = override.value()
    except Exception:  # noqa: BLE001 - sweeps and other non-values are left to Hydra
        return None
    if default is None or value is None or not isinstance(default, (bool, int, float)) \
            or not isinstance(value, (bool, int, float, str)):
        return None
    if isinstance(default, bool):
        ok, want = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)  # 1e3 / 2048.0: the schema cannot take a float
        want = "an integer"
    else:
        ok, want = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    # a quoted number (image_size='64') is a string: shown quoted, or the line would read "64 is not an integer"
    shown = repr(value) if isinstance(value, str) and value.strip().lstrip("+-").replace(".", "", 1).isdigit() \
        else value
    return None if ok else f"{key}={shown} is not {want} (its default is {default!r})"


def unparsable_override(overrides: List[str]) -> Optional[str]:
    """Why the first override Hydra's grammar cannot read fails, naming its key and how to quote it, or
    None. Hydra takes unquoted values of letters, digits and a few symbols only: a value with ``=``
    (solo-learn's checkpoint names ``...-ep=0.ckpt``), non-ASCII letters (``été``), spaces, brackets or
    quotes must be quoted: ``key='value'`` (inside a shell: ``"key='value'"``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    for arg in overrides:
        try:
            parser.parse_overrides([arg])
        except HydraException as exc:
            text = " ".join(str(exc).split())
            if "=" not in arg:
                return f"cannot parse the override {arg!r} ({text}); overrides look like key=value"
            key, value = arg.split("=", 1)
            why = ("'='" if "=" in value else "non-ASCII letters" if any(ord(c) > 127 for c in value)
                   else "characters such as spaces, quotes, brackets or commas")
            quote = '"' if "'" in value else "'"
            return (f"cannot read the override {arg!r}: the value of {key.lstrip('+~')} holds {why}, which Hydra "
                    f"reads only inside quotes: quote it, "
                    f"{key}={quote}{value}{quote} (in a shell: \"{key}={quote}{value}{quote}\")")
    return None


def override_problem(config_file: Path, overrides: List[str]) -> Optional[str]:
    """Why ``overrides`` cannot apply to ``config_file`` (a malformed override, an unknown key, a value
    that does not fit the type of the YAML's value), or None.
    Keys added with ``+``/``++`` and Hydra's own ``hydra.*`` keys are left to Hydra."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    problem = unparsable_override(overrides)
    if problem:
        return problem
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as exc:
        text = " ".join(str(exc).split())
        return f"cannot parse the command line ({text}); overrides look like key=value"
    cfg = OmegaConf.load(config_file)
    for override in parsed:
        key = override.key_or_group
        if override.is_add() or override.is_force_add() or override.is_delete() or key.startswith("hydra"):
            continue
        if override.package is not None:
            continue
        if _has_key(cfg, key):
            problem = _type_problem(cfg, key, override)
            if problem:
                return f"{problem} (see {config_file.name})"
            continue
        if key in RENAMED and _has_key(cfg, RENAMED[key]):
            return f"{key!r} was renamed {RENAMED[key]!r}; use {RENAMED[key]}={override.value()} (see {config_file.name})"
        if key in REPLACED and _has_key(cfg, REPLACED[key][0]):
            new, values = REPLACED[key]
            value = values.get(override.value(), "|".join(values.values()))
            return f"{key!r} was replaced by {new!r}; use {new}={value} (see {config_file.name})"
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        node = OmegaConf.select(cfg, parent, default=None) if parent else cfg
        keys = sorted(f"{parent + '.' if parent else ''}{k}" for k in node.keys()) if OmegaConf.is_dict(node) else []
        keys = [k for k in keys if k not in ("defaults", "hydra")]
        more = ", ..." if len(keys) > _SHOW else ""
        return (f"unknown key {key!r}" + (f"; keys here: {', '.join(keys[:_SHOW])}{more}" if keys else "")
                + f" (see {config_file.name})")
    return None


def exit_on_bad_overrides(config_file: Path, argv: Optional[List[str]] = None) -> None:
    """One line + exit 2 when the command line's overrides do not fit ``config_file``."""
    argv = sys.argv[1:] if argv is None else argv
    overrides, skip_next = [], False
    for arg in argv:
        if skip_next:
            skip_next = False
        elif arg.startswith("-"):
            skip_next = arg in _VALUE_FLAGS  # Hydra flags followed by a value
        else:
            overrides.append(arg)
    problem = override_problem(config_file, overrides)
    if problem:
        print_error(ConfigError(problem))
        sys.exit(USAGE_EXIT_CODE)
