"""Edge-aware refinement of a soft mask, guided by its image: the methods of ``refine.method``, by name.

A refinement step is one function ``step(guide, fg, params, scale) -> refined`` (``guide``: the uint8 RGB
picture, ``H x W x 3``; ``fg``: the soft foreground mask, float32 ``H x W`` in [0, 1]; ``scale``: the working
size over the full size, which the step's pixel-unit parameters are multiplied by) plus one line of
:data:`REFINERS` naming it with its parameter class. Every parameter class has ``max_pixels``: a larger input is
refined at ``sqrt(max_pixels / (H * W))`` of its size (the guide and mask resized with area averaging, the
result resized back bilinearly), which bounds the step's memory on huge photos and its time. ``refine.method``
is one name, several joined by ``+`` (run in that order, each at its own working size, e.g. ``crf+fgs``: the
dense CRF at a reduced size, then the fast global smoother at full size, which also restores the edges the
reduced size lost), or ``none``.

============  ===========================================================================================
method        what
============  ===========================================================================================
``crf``       2-label dense CRF (Krähenbühl & Koltun 2011, ``pydensecrf2``): unary ``-log p``, Gaussian and
              bilateral pairwise kernels, mean-field; the paper's refinement (App. B, pydensecrf defaults)
``guided``    guided filter (He et al., TPAMI 2013; ``cv2.ximgproc.guidedFilter``) with the grey image as
              guide: a local linear model of the mask in the guide's intensity
``fgs``       fast global smoother (Min et al., TIP 2014; ``cv2.ximgproc.fastGlobalSmootherFilter``): an
              edge-aware weighted-least-squares smoothing with the RGB image as guide
``none``      the soft mask itself
============  ===========================================================================================

Which one the presets use, and what each scores on the dev sets: ``docs/fidelity.md``, ``docs/results.md``.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import numpy as np

from occon_plugin.errors import ConfigError, MissingDependencyError
from occon_plugin.localize.crf import CrfParams, dense_crf

NONE = "none"
RESOLUTIONS = ("input", "image")
DEFAULT_MAX_PIXELS = 4_000_000


def _ximgproc():
    import cv2

    if not hasattr(cv2, "ximgproc"):
        raise MissingDependencyError(
            "this refine.method needs OpenCV's contrib module cv2.ximgproc, which the installed OpenCV lacks: "
            "pip uninstall -y opencv-python-headless opencv-python opencv-contrib-python-headless && pip install "
            "opencv-contrib-python-headless (or ./run setup; or choose refine.method=crf or none)")
    return cv2.ximgproc


@dataclass
class GuidedParams:
    """Guided filter: ``radius`` of the box window in pixels (at full size), ``eps`` the regularisation in units
    of the grey guide in [0, 1] squared (larger: smoother across weak edges)."""

    radius: int = 4
    eps: float = 1e-3
    max_pixels: Optional[int] = DEFAULT_MAX_PIXELS

    def problems(self) -> list[tuple[str, object, str]]:
        """``(key, value, what it must be)`` for every parameter out of range (empty: fine)."""
        out = []
        if self.radius < 1:
            out.append(("radius", self.radius, "must be >= 1"))
        if not (math.isfinite(self.eps) and self.eps > 0):
            out.append(("eps", self.eps, "must be > 0"))
        return out


def guided_filter(guide: np.ndarray, fg: np.ndarray, params: GuidedParams, scale: float) -> np.ndarray:
    """He et al.'s guided filter of ``fg`` with the grey ``guide`` (``cv2.ximgproc.guidedFilter``)."""
    import cv2

    grey = cv2.cvtColor(guide, cv2.COLOR_RGB2GRAY)
    radius = max(1, int(round(params.radius * scale)))
    return _ximgproc().guidedFilter(grey, fg, radius, params.eps * 255.0 ** 2)


@dataclass
class FgsParams:
    """Fast global smoother: ``lam`` the smoothness weight (lambda; its reach grows as its square root, in pixels
    at full size), ``sigma_color`` the colour difference (0-255 RGB) across which smoothing stops,
    ``lambda_attenuation`` and ``iters`` OpenCV's (0.25 and 3 are its defaults)."""

    lam: float = 300.0
    sigma_color: float = 8.0
    lambda_attenuation: float = 0.25
    iters: int = 3
    max_pixels: Optional[int] = DEFAULT_MAX_PIXELS

    def problems(self) -> list[tuple[str, object, str]]:
        """``(key, value, what it must be)`` for every parameter out of range (empty: fine)."""
        out = []
        for key in ("lam", "sigma_color"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value > 0):
                out.append((key, value, "must be > 0"))
        if not 0 <= self.lambda_attenuation <= 1:
            out.append(("lambda_attenuation", self.lambda_attenuation, "must be in [0, 1]"))
        if self.iters < 1:
            out.append(("iters", self.iters, "must be >= 1"))
        return out


def fast_global_smoother(guide: np.ndarray, fg: np.ndarray, params: FgsParams, scale: float) -> np.ndarray:
    """Min et al.'s fast global smoother of ``fg`` with the RGB ``guide`` (``cv2.ximgproc.fastGlobalSmootherFilter``);
    ``lam`` scales with the area (its reach, in pixels, with the side)."""
    return _ximgproc().fastGlobalSmootherFilter(guide, fg, params.lam * scale * scale, params.sigma_color,
                                                lambda_attenuation=params.lambda_attenuation, num_iter=params.iters)


@dataclass(frozen=True)
class Refiner:
    """One refinement method: its step function and its parameter class (a dataclass with ``max_pixels``)."""

    step: Callable[[np.ndarray, np.ndarray, Any, float], np.ndarray]
    params: type


# name -> method. A new refinement: its step function and parameter class, and a line here (and its keys in
# configs/localize.yaml, which tests/localize/test_cli_localize.py checks against this table).
REFINERS: Dict[str, Refiner] = {
    "crf": Refiner(dense_crf, CrfParams),
    "guided": Refiner(guided_filter, GuidedParams),
    "fgs": Refiner(fast_global_smoother, FgsParams),
}


def parse_method(method: str) -> Tuple[str, ...]:
    """``"none"`` -> ``()``, ``"crf+fgs"`` -> ``("crf", "fgs")``. Raises ConfigError naming ``refine.method``."""
    names = tuple(part.strip() for part in str(method).split("+"))
    if names == (NONE,):
        return ()
    unknown = [n for n in names if n not in REFINERS]
    if unknown or not names:
        raise ConfigError(f"refine.method={method!r} is invalid: use {NONE}, one of {sorted(REFINERS)} or several "
                          f"joined by '+' (e.g. crf+fgs)")
    return names


def canonical_method(method: str) -> str:
    """``method`` in its one recorded spelling: ``" crf + fgs "`` -> ``"crf+fgs"``, ``" none "`` -> ``"none"`` (so the
    same chain written two ways is recorded, and resumed, as one). Raises ConfigError as :func:`parse_method`."""
    return "+".join(parse_method(method)) or NONE


def explicit_params(refine) -> Tuple[str, ...]:
    """The ``refine.<method>.<key>`` parameters set (not None) in a :data:`RefineSettings`, as dotted keys."""
    return tuple(f"refine.{name}.{f.name}" for name in REFINERS for f in dataclasses.fields(getattr(refine, name))
                 if getattr(getattr(refine, name), f.name) is not None)


def unused_params(keys, method: str) -> Tuple[str, ...]:
    """The dotted ``refine.<method>.<key>`` of ``keys`` whose method is not a step of ``method`` (they change
    nothing: the chain never runs that method)."""
    steps = set(parse_method(method))
    return tuple(k for k in keys if k.split(".")[1] not in steps)


def working_size(height: int, width: int, max_pixels: Optional[int]) -> Tuple[int, int, float]:
    """``(h, w, scale)`` a step runs at for an ``height x width`` input (scale 1: full size)."""
    if not max_pixels or height * width <= max_pixels:
        return height, width, 1.0
    scale = math.sqrt(max_pixels / float(height * width))
    return max(1, int(height * scale)), max(1, int(width * scale)), scale


def refine_step(name: str, guide: np.ndarray, fg: np.ndarray, params) -> np.ndarray:
    """One step of :data:`REFINERS` at its bounded working size: float32 ``H x W`` in [0, 1]."""
    import cv2

    refiner = REFINERS[name]
    height, width = fg.shape
    h, w, scale = working_size(height, width, params.max_pixels)
    if scale == 1.0:
        out = np.asarray(refiner.step(guide, fg, params, 1.0), dtype=np.float32)
    else:
        small = cv2.resize(guide, (w, h), interpolation=cv2.INTER_AREA)
        small_fg = cv2.resize(fg, (w, h), interpolation=cv2.INTER_AREA)
        out = cv2.resize(np.asarray(refiner.step(small, small_fg, params, scale), dtype=np.float32), (width, height),
                         interpolation=cv2.INTER_LINEAR)
    out = np.require(out, requirements=["C", "W"])
    return np.clip(out, 0.0, 1.0, out=out)  # in place: no second full-size copy


def refine(guide: np.ndarray, soft: np.ndarray, method: str, params: Mapping[str, Any]) -> np.ndarray:
    """Refine the soft mask ``soft`` (``H x W``, any real dtype, in [0, 1]) guided by ``guide`` (uint8 RGB
    ``H x W x 3``; read-only or non-contiguous arrays are fine) with ``method`` (``crf``, ``crf+fgs``, ...;
    ``none`` returns the mask as float32); ``params``: step name -> its parameters (the class's defaults for a
    step left out). Returns a new float32 ``H x W`` map in [0, 1].

    Raises ValueError for mismatched shapes, a non-uint8 guide or a step's parameters out of range (its class's
    ``problems()``: a width of 0 crashes pydensecrf), ConfigError for an unknown method, MissingDependencyError
    when the step's library is not installed.
    """
    mask = np.asarray(soft)
    if mask.ndim != 2:
        raise ValueError(f"soft mask must be H x W, got shape {mask.shape}")
    height, width = mask.shape
    image = np.asarray(guide)
    if image.shape != (height, width, 3) or image.dtype != np.uint8:
        raise ValueError(f"guide must be uint8 {height}x{width}x3 to match the mask, got {image.dtype} {image.shape}")
    # the libraries need writable C-contiguous buffers (np.asarray of a PIL image is read-only)
    image = np.require(image, dtype=np.uint8, requirements=["C", "W"])
    fg = np.array(mask, dtype=np.float32, order="C", copy=True)  # a copy: the caller's mask stays as it is
    np.clip(fg, 0.0, 1.0, out=fg)
    steps = [(name, params.get(name) or REFINERS[name].params()) for name in parse_method(method)]
    bad = [f"{type(p).__name__}.{key}={value!r} {what}" for _, p in steps for key, value, what in p.problems()]
    if bad:
        raise ValueError("; ".join(bad))
    for name, p in steps:
        fg = refine_step(name, image, fg, p)
    return fg


# ------------------------------------------------------------------------------------------- settings

def _settings_twin(cls: type) -> type:
    """The config twin of a parameter class: every field Optional with default None (None: the preset's value,
    else the class's default; filled by :func:`occon_plugin.localize.presets.apply_preset`)."""
    hints = typing.get_type_hints(cls)
    fields = []
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if typing.get_origin(kind) is typing.Union:  # Optional[int] -> int
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        fields.append((f.name, Optional[kind], dataclasses.field(default=None)))
    twin = dataclasses.make_dataclass(f"{cls.__name__}Settings", fields)
    twin.__module__ = __name__
    return twin


PARAM_SETTINGS: Dict[str, type] = {name: _settings_twin(r.params) for name, r in REFINERS.items()}
for _cls in PARAM_SETTINGS.values():
    globals()[_cls.__name__] = _cls  # importable by name (pickling, OmegaConf)

RefineSettings = dataclasses.make_dataclass(
    "RefineSettings",
    [("method", Optional[str], dataclasses.field(default=None)),
     ("resolution", Optional[str], dataclasses.field(default=None))]
    + [(name, cls, dataclasses.field(default_factory=cls)) for name, cls in PARAM_SETTINGS.items()])
RefineSettings.__module__ = __name__
RefineSettings.__doc__ = ("``refine.*`` of occon-localize: ``method`` (see :data:`REFINERS`), ``resolution`` (input: "
                          "the model input, image: the image's own size) and one section of parameters per method; "
                          "None: decided by the preset")


def refine_settings(method: Optional[str] = None, resolution: Optional[str] = None,
                    **params: Mapping[str, Any]) -> Any:
    """A :data:`RefineSettings` from plain values: ``refine_settings("crf+fgs", "input", crf={"bilateral_srgb": 8.0},
    fgs={"lam": 1000.0})``; the parameters not given stay None (the preset's value, else the method's default).

    Raises:
        ConfigError: a section that is not a method of :data:`REFINERS`, or a key its parameters do not have.
    """
    sections = {}
    for name, values in params.items():
        if name not in PARAM_SETTINGS:
            raise ConfigError(f"refine.{name} is not a refinement method: use one of {sorted(REFINERS)}")
        try:
            sections[name] = PARAM_SETTINGS[name](**dict(values))
        except TypeError:
            known = [f.name for f in dataclasses.fields(PARAM_SETTINGS[name])]
            raise ConfigError(f"refine.{name} takes {known}; got {sorted(values)}") from None
    return RefineSettings(method=method, resolution=resolution, **sections)


@dataclass(frozen=True)
class RefineRun:
    """A resolved refinement, as the post-processing workers receive it: ``method`` (``crf+fgs``, ``none``, ...),
    ``resolution`` (input | image) and the parameters of each of its steps."""

    method: str = NONE
    resolution: str = "input"
    params: Tuple[Tuple[str, Any], ...] = ()

    @property
    def steps(self) -> Tuple[str, ...]:
        return parse_method(self.method)

    @property
    def enabled(self) -> bool:
        return bool(self.steps)

    def params_map(self) -> Dict[str, Any]:
        return dict(self.params)

    @staticmethod
    def from_settings(refine) -> "RefineRun":
        """From a resolved :data:`RefineSettings` (no None left in the chosen steps' parameters)."""
        steps = parse_method(refine.method)
        params = tuple((name, REFINERS[name].params(**dataclasses.asdict(getattr(refine, name)))) for name in steps)
        return RefineRun(method=str(refine.method), resolution=str(refine.resolution), params=params)


def fill_param_defaults(refine) -> None:
    """Every parameter still None in a :data:`RefineSettings` takes its class's default (in place)."""
    for name, r in REFINERS.items():
        section, default = getattr(refine, name), r.params()
        for f in dataclasses.fields(r.params):
            if getattr(section, f.name) is None:
                setattr(section, f.name, getattr(default, f.name))


def check_refine(refine) -> None:
    """Range checks of ``refine.*``; ConfigError names the key. None values (left to the preset) pass.

    Raises:
        ConfigError: the first bad ``refine.*`` key, its value and what it must be (one line).
    """
    if refine.method is not None:
        parse_method(refine.method)
    if refine.resolution not in (None, *RESOLUTIONS):
        raise ConfigError(f"refine.resolution={refine.resolution!r} is invalid: use input (the image_size^2 model "
                          f"input, as the authors) or image (the image's own size)")
    for name, r in REFINERS.items():
        section = getattr(refine, name)
        mp = section.max_pixels
        if mp is not None and mp < 0:
            raise ConfigError(f"refine.{name}.max_pixels={mp!r} is invalid: must be > 0 (0: no bound)")
        given = {f.name: getattr(section, f.name) for f in dataclasses.fields(r.params)
                 if getattr(section, f.name) is not None}  # the rest: checked once the preset has filled it in
        for key, value, what in r.params(**given).problems():
            if key in given:
                raise ConfigError(f"refine.{name}.{key}={value!r} is invalid: {what}")
