"""Thin wrapper: ``python scripts/eval/main_localization.py key=value ...`` (same as occon-eval-localization)."""
from occon_plugin.cli.eval_localization import main

if __name__ == "__main__":
    main()
