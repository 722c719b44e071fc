"""Thin wrapper: ``python scripts/eval/main_bgchallenge.py key=value ...`` (same as occon-eval-bgchallenge)."""
from occon_plugin.cli.eval_bgchallenge import main

if __name__ == "__main__":
    main()
