"""Results tables (CSV + JSON, written atomically) and W&B logging for the evaluation CLIs."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Dict, List, Optional

from occon_plugin.atomic import atomic_path, atomic_write_text, make_output_dir  # noqa: F401  (re-exported)


def _json_default(value: Any):
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return value.name
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def write_results(out_dir, name: str, rows: List[Dict[str, Any]], details: Optional[Dict[str, Any]] = None
                  ) -> tuple[Path, Path]:
    """``<out_dir>/<name>.csv`` (one line per row) and ``<name>.json`` (``{"rows": ..., **details}``).

    Raises:
        ValueError: no rows.
    """
    if not rows:
        raise ValueError("no result rows to write")
    fields: List[str] = []
    for row in rows:
        fields.extend(k for k in row if k not in fields)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    out_dir = Path(out_dir)
    csv_path = atomic_write_text(out_dir / f"{name}.csv", buf.getvalue())
    json_path = atomic_write_text(out_dir / f"{name}.json",
                                  json.dumps({"rows": rows, **(details or {})}, indent=2, default=_json_default))
    return csv_path, json_path


def format_table(rows: List[Dict[str, Any]]) -> str:
    """A plain aligned text table (floats with 4 decimals)."""
    fields: List[str] = []
    for row in rows:
        fields.extend(k for k in row if k not in fields)
    cells = [fields] + [[f"{r.get(k):.4f}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in fields]
                        for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(fields))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in cells)


def init_wandb(cfg, out_dir, job_type: str):
    """A W&B run (mode by the project's one rule, :func:`occon_plugin.tracking.wandb_mode`: the user's
    ``WANDB_MODE`` / ``WANDB_DISABLED`` first) with its files under ``out_dir`` (``WANDB_DIR`` when the user set
    it: :func:`occon_plugin.tracking.wandb_dir`); None if disabled (nothing written).

    ``cfg.wandb``: ``{enabled: bool, offline: bool, project: str, entity: str|null, name: str|null}``.
    """
    from omegaconf import OmegaConf

    from occon_plugin.tracking import wandb_dir, wandb_mode, wandb_wanted

    wb = cfg.get("wandb") or {}
    wandb_cfg = OmegaConf.create({"wandb": {"enabled": True, **dict(wb)}})
    if not wandb_wanted(wandb_cfg):
        return None
    import wandb

    out_dir = wandb_dir(out_dir)
    make_output_dir(out_dir)
    return wandb.init(mode=wandb_mode(wandb_cfg), dir=str(out_dir), project=wb.get("project", "occon"),
                      entity=wb.get("entity"), name=wb.get("name"), job_type=job_type,
                      config=OmegaConf.to_container(cfg, resolve=True), reinit=True)


def markdown_table(rows: List[Dict[str, Any]], columns: List[tuple[str, str]], digits: int = 3) -> str:
    """A GitHub markdown table of ``rows`` with ``columns`` = [(key, header), ...]; floats rounded to
    ``digits``, missing or None values shown as an en dash."""
    def cell(value) -> str:
        if value is None:
            return "–"
        if isinstance(value, float):
            return f"{value:.{digits}f}"
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(header for _, header in columns) + " |",
             "|" + "|".join(" --- " for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(row.get(key)) for key, _ in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def image_grid(tiles: List[List[Any]], column_titles: List[str], tile_height: int = 120, gap: int = 4,
               title_height: int = 18):
    """Rows of RGB uint8 tiles resized to ``tile_height`` (aspect kept; each column as wide as its widest
    tile) on a white canvas, with a title above each column. Returns an RGB uint8 array.

    Raises:
        ValueError: a row without one tile per column title.
    """
    import numpy as np
    from PIL import Image, ImageDraw

    if not tiles or any(len(row) != len(column_titles) for row in tiles):
        raise ValueError(f"every row needs {len(column_titles)} tiles (one per column title)")
    scaled = [[Image.fromarray(np.asarray(t, dtype=np.uint8)).resize(
        (max(1, round(t.shape[1] * tile_height / t.shape[0])), tile_height), Image.BILINEAR) for t in row]
        for row in tiles]
    widths = [max(row[c].width for row in scaled) for c in range(len(column_titles))]
    canvas = Image.new("RGB", (sum(widths) + gap * (len(widths) + 1),
                               title_height + len(scaled) * (tile_height + gap) + gap), "white")
    draw = ImageDraw.Draw(canvas)
    x = gap
    for c, title in enumerate(column_titles):
        draw.text((x, 3), title, fill="black")
        for r, row in enumerate(scaled):
            canvas.paste(row[c], (x + (widths[c] - row[c].width) // 2, title_height + gap + r * (tile_height + gap)))
        x += widths[c] + gap
    return np.asarray(canvas)


def save_png_palette(array, path, colors: int = 256) -> Path:
    """An RGB uint8 array as an 8-bit palette PNG (small files for docs), written atomically."""
    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8)).quantize(colors=colors).save(buf, format="PNG", optimize=True)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())
    return Path(path)
