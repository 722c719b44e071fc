"""Reading keys of a run's cfg (a DictConfig or a plain dict) and the numeric ranges settings may take
(:class:`Range`): the leaf helpers every layer uses, the host adapter (:mod:`occon_plugin.host`) included.
Imports nothing of the plugin, so no layer's import of it can close
an import circle; :mod:`occon_plugin.config` re-exports them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf


def select(cfg: DictConfig | dict, key: str, default: Any = None) -> Any:
    """``cfg.<key>`` (dotted, ``a[0].b`` too) of a DictConfig or plain dict; ``default`` if missing or null."""
    if isinstance(cfg, dict):
        cfg = OmegaConf.create(cfg)
    value = OmegaConf.select(cfg, key, default=default)
    return default if value is None else value


def num_devices(cfg: DictConfig) -> int:
    """Processes per node from ``devices`` (an int, a digit string or a list of device ids; anything else: 1)."""
    devices = select(cfg, "devices", 1)
    if isinstance(devices, int):
        return max(devices, 1)
    if isinstance(devices, str):
        return int(devices) if devices.isdigit() else 1
    return max(len(devices), 1)


@dataclass(frozen=True)
class Range:
    """The values a numeric setting may take: ``low``/``high`` bounds (``*_open``: the bound itself is
    excluded), ``integer``, ``nullable`` (null allowed, e.g. "the default"), ``also`` (extra values
    allowed outside the range, e.g. Lightning's -1 = no limit), ``hint`` (why, said in the message),
    ``allow_empty`` (a list value may be empty)."""

    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    nullable: bool = False
    also: tuple = ()
    hint: str = ""
    allow_empty: bool = False  # a list value may be [] (e.g. no threshold sweep)

    def describe(self) -> str:
        def num(x: float) -> str:
            return str(int(x)) if float(x).is_integer() else f"{x:g}"

        if self.low is not None and self.high is not None:
            text = (f"in {'(' if self.low_open else '['}{num(self.low)}, {num(self.high)}"
                    f"{')' if self.high_open else ']'}")
        elif self.low is not None:
            text = f"{'>' if self.low_open else '>='} {num(self.low)}"
        elif self.high is not None:
            text = f"{'<' if self.high_open else '<='} {num(self.high)}"
        else:
            text = "a finite number"
        kind = "an integer " if self.integer else ""
        extra = "".join(f" or {v}" for v in self.also) + (" or null" if self.nullable else "")
        return f"must be {kind}{text}{extra}" + (f" ({self.hint})" if self.hint else "")

    def accepts(self, value: Any) -> bool:
        import math

        if value is None:
            return self.nullable
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if value in self.also:
            return True
        if not math.isfinite(float(value)) or (self.integer and float(value) != int(value)):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return False
        return True


# ContraCAM's input side (occon-localize image_size, occon.refresh.image_size): the backbone's activations grow with
# batch_size x image_size^2, so a side past 2048 px is a typo or an out-of-memory kill, not a setting
CAM_IMAGE_SIZE = Range(32, 2048, integer=True, hint="pixels; memory grows with batch_size x image_size^2")
