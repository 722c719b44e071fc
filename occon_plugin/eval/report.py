"""Results tables (CSV + JSON, written atomically) and W&B logging for the evaluation CLIs."""
from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional


def atomic_write_text(path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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
    """``<out_dir>/<name>.csv`` (one line per row) and ``<name>.json`` (``{"rows": ..., **details}``)."""
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
    """A W&B run, offline unless ``WANDB_API_KEY`` is set and ``wandb.offline=false``; None if disabled.

    ``cfg.wandb``: ``{enabled: bool, offline: bool, project: str, entity: str|null, name: str|null}``.
    """
    wb = cfg.get("wandb") or {}
    if not wb.get("enabled", True):
        return None
    import wandb
    from omegaconf import OmegaConf

    online = bool(os.environ.get("WANDB_API_KEY")) and not wb.get("offline", True)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    return wandb.init(mode="online" if online else "offline", dir=str(out_dir), project=wb.get("project", "occon"),
                      entity=wb.get("entity"), name=wb.get("name"), job_type=job_type,
                      config=OmegaConf.to_container(cfg, resolve=True))
