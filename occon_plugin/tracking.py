"""Weights & Biases: on by config; the user's own W&B environment wins; offline without an API key.

The one rule (:func:`wandb_mode`), for every command (``occon-pretrain``, ``occon-linear``,
``occon-localize ++wandb.enabled=true``, the ``occon-eval-*`` CLIs) and for the host's own
``main_pretrain.py`` running an object-aware method (:func:`honour_wandb_environment`):

1. ``WANDB_MODE=disabled`` or ``WANDB_DISABLED=true`` (any of true/1/yes/on): no W&B run, nothing
   written (the commands do not even import wandb's run machinery);
2. ``WANDB_MODE=offline`` (or ``dryrun``) / ``WANDB_MODE=online``: that mode;
3. otherwise the config's ``wandb.offline`` (``true``: offline; ``false``: online), and with it
   unset, online iff an API key is configured (``WANDB_API_KEY`` or ``wandb login``). Online without a
   key cannot work: such a run goes offline and says so in one line.

Where the run files go (:func:`wandb_dir`): ``WANDB_DIR`` when the user set it (as wandb and the host's own
``main_pretrain.py`` do), else the command's output folder (``<output_dir>/wandb``, next to the checkpoint).

Each job's run is finished when the job ends (:func:`finish_wandb`), so under Hydra's multirun
(``-m``) every job gets its own run. The pretraining logger and its pictures: :mod:`occon_plugin.train.tracking`.
"""
from __future__ import annotations

import netrc
import os
import sys
from pathlib import Path
from typing import Any, Optional, Tuple

from omegaconf import DictConfig, OmegaConf

_TRUE = ("1", "true", "yes", "on", "y", "t")
MODES = ("online", "offline", "disabled")


def wandb_api_key_configured() -> bool:
    """True when an API key is set in the environment or stored by ``wandb login`` (netrc)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def environment_mode() -> Optional[str]:
    """The mode the user chose through W&B's environment (``WANDB_DISABLED``, ``WANDB_MODE``), or None."""
    if os.environ.get("WANDB_DISABLED", "").strip().lower() in _TRUE:
        return "disabled"
    mode = os.environ.get("WANDB_MODE", "").strip().lower()
    aliases = {"dryrun": "offline", "run": "online", "shared": "shared"}  # wandb's other names for its modes
    return aliases.get(mode, mode if mode in MODES else None)


def wandb_mode(cfg: Any, say: bool = True) -> str:
    """``"online"``, ``"offline"`` or ``"disabled"`` (or wandb's ``"shared"`` when the user set it) by the module's rule (``cfg.wandb.offline``: true /
    false / absent). ``say``: print the one line when an online run goes offline for want of a key."""
    chosen = environment_mode()
    if chosen is not None:
        return chosen
    explicit = OmegaConf.select(cfg, "wandb.offline", default=None) if OmegaConf.is_config(cfg) else None
    if explicit is not None and bool(explicit):
        return "offline"
    if wandb_api_key_configured():
        return "online"
    if explicit is not None and say:
        print("[occon] W&B: wandb.offline=false but no API key is configured (WANDB_API_KEY or `wandb login`): "
              "running offline; `wandb sync` uploads the run later", file=sys.stderr)
    return "offline"


def wandb_offline(cfg: DictConfig) -> bool:
    """Whether W&B runs offline (True also when disabled: nothing goes online)."""
    return wandb_mode(cfg, say=False) in ("offline", "disabled")


def wandb_dir(default: Path) -> Path:
    """The folder W&B writes a run's files under: ``WANDB_DIR`` when set (non-empty; created if missing), else
    ``default`` (a command's output folder). Raises :class:`~occon_plugin.errors.ConfigError` naming ``WANDB_DIR``
    when that folder cannot be created or written. wandb itself lets an explicit ``dir=`` beat ``WANDB_DIR``; the
    plugin's commands pass one only when the user chose none, so a user's ``WANDB_DIR`` (a scratch disk, a
    quota'd home) holds every command's runs, as it does for the host's own script."""
    chosen = os.environ.get("WANDB_DIR", "").strip()
    if not chosen:
        return Path(default)
    path = Path(chosen).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        why = None if os.access(path, os.W_OK | os.X_OK) else "not writable"
    except OSError as exc:  # a file there, /proc, no permission: wandb would fall back to /tmp without a word
        why = exc.strerror or type(exc).__name__
    if why:
        from occon_plugin.errors import ConfigError

        raise ConfigError(f"WANDB_DIR={chosen}: cannot write W&B's run files there ({why}); set WANDB_DIR to a "
                          f"writable folder, or unset it (the run files then go next to the outputs)")
    return path


def check_wandb_dir(cfg: Any) -> None:
    """Before a command does any work: when W&B is on (``wandb.enabled`` and not disabled by the environment) and
    the user set ``WANDB_DIR``, that folder must be writable (:func:`wandb_dir`), so a bad one stops the command
    at once instead of after its work (or, in wandb's own fallback, sending the run to the temp folder).

    Raises:
        ConfigError: one line naming ``WANDB_DIR``.
    """
    if os.environ.get("WANDB_DIR", "").strip() and wandb_wanted(cfg):
        wandb_dir(Path("."))


def wandb_wanted(cfg: Any) -> bool:
    """``wandb.enabled`` in ``cfg`` and not disabled by the user's W&B environment."""
    return bool(OmegaConf.select(cfg, "wandb.enabled", default=False)) and environment_mode() != "disabled"


def honour_wandb_environment(cfg: Any) -> Optional[str]:
    """For scripts that create their own ``WandbLogger`` (solo-learn's ``main_pretrain.py``, whose
    ``wandb.offline`` defaults to false): set ``WANDB_MODE`` to the mode of :func:`wandb_mode` when the
    user did not set it, so a run without an API key goes offline instead of failing in wandb's login,
    and ``WANDB_DISABLED=true`` disables it. Returns the mode set, or None (nothing changed)."""
    if not OmegaConf.select(cfg, "wandb.enabled", default=False) or os.environ.get("WANDB_MODE"):
        return None
    mode = wandb_mode(cfg)
    if mode == "online":
        return None
    os.environ["WANDB_MODE"] = mode
    return mode


def finish_wandb(logger: Any = None) -> None:
    """End the W&B run of this job (``logger``'s, or the process's current run): under Hydra's
    multirun the next job starts its own run instead of writing into this one (Lightning's
    ``WandbLogger`` reuses a run still open in the process)."""
    if "wandb" not in sys.modules:
        return
    import wandb

    experiment = getattr(logger, "_experiment", None) if logger is not None else None
    if experiment is not None and hasattr(experiment, "finish"):
        experiment.finish()
    if wandb.run is not None:
        wandb.finish()


# --------------------------------------------------------------------------------------------
# Pictures of what the localizer did (W&B only); those of pretraining: occon_plugin.train.tracking.
# --------------------------------------------------------------------------------------------
N_PICTURES = 4


def split_wandb_settings(cfg: DictConfig) -> Tuple[DictConfig, Optional[DictConfig]]:
    """(``cfg`` without its ``wandb`` section, that section or None), for CLIs whose structured
    settings do not know W&B (``occon-localize``: ``++wandb.enabled=true [++wandb.project=...]``)."""
    if "wandb" not in cfg:
        return cfg, None
    section = cfg.wandb
    rest = OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "wandb"])
    return rest, OmegaConf.create({"wandb": OmegaConf.to_container(section, resolve=True), "name": "localize"})


def store_overlays(store_root: Any, data: Any, n: int = N_PICTURES) -> list:
    """``n`` pictures of a store: ``(overlay, caption)`` with the overlay an ``H x W x 3`` uint8 image (its
    stored soft mask as a heat map and its boxes, :func:`~occon_plugin.eval.overlay.render_overlay`) and the
    caption the image's path. ``data``: the settings that listed the images (``path``, ``image_root``). Images
    that cannot be read are left out (a picture is not worth failing a run)."""
    from occon_plugin.eval.overlay import render_overlay
    from occon_plugin.images import list_images, load_image
    from occon_plugin.store import Store

    store = Store.open(store_root, allow_incomplete=True)
    out, root = [], list_images(data.path, getattr(data, "image_root", None)).root
    for entry in [e for e in store.entries.values() if e.ok][:n]:
        try:
            image = load_image(root, entry.path)
            mask = store.load_mask(entry.path)
        except Exception:  # noqa: BLE001 - a picture is not worth failing the run
            continue
        h, w = image.shape[:2]
        boxes = [[b[0] * w, b[1] * h, b[2] * w, b[3] * h] for b in entry.boxes]
        out.append((render_overlay(image, mask, pred_boxes=boxes), entry.path))
    return out


def log_localize_run(wandb_cfg: Optional[DictConfig], summary: dict, data: Any, n: int = N_PICTURES) -> Optional[Path]:
    """When W&B is on: one run (:func:`wandb_mode`, files under the store's
    ``wandb/``, or ``WANDB_DIR``: :func:`wandb_dir`) with the localizer's counts (``localize/<count>``) and ``n`` overlays (:func:`store_overlays`,
    ``localize/overlays``) of the store. ``summary``: what ``run_localize`` returned;
    ``data``: its ``data`` settings (``path``, ``image_root``). Returns the run folder or None."""
    if wandb_cfg is None or not wandb_wanted(wandb_cfg):
        return None
    import wandb

    counts = summary["manifest"]["counts"]
    mode = wandb_mode(wandb_cfg)
    root = Path(summary["store"])
    run = wandb.init(project=str(OmegaConf.select(wandb_cfg, "wandb.project", default="occon-plugin")),
                     entity=OmegaConf.select(wandb_cfg, "wandb.entity", default=None),
                     name=str(OmegaConf.select(wandb_cfg, "wandb.name", default=None) or f"localize-{root.name}"),
                     dir=str(wandb_dir(root)), mode=mode, job_type="localize",
                     config={"store": str(root), "listed": summary.get("listed")}, reinit=True)
    try:
        run.log({f"localize/{k}": v for k, v in counts.items() if isinstance(v, (int, float))}
                | {"localize/seconds": summary.get("seconds", 0)})
        images = [wandb.Image(picture, caption=caption) for picture, caption in store_overlays(root, data, n)]
        if images:
            run.log({"localize/overlays": images})
        return Path(run.dir).parent
    finally:
        run.finish()


