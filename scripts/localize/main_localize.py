"""Thin wrapper: ``python scripts/localize/main_localize.py data.path=... output_dir=...`` (same as occon-localize)."""
from occon_plugin.cli.localize import main

if __name__ == "__main__":
    main()
