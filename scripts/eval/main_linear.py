"""Thin wrapper: ``python scripts/eval/main_linear.py key=value ...`` (same as occon-eval-linear)."""
from occon_plugin.cli.eval_linear import main

if __name__ == "__main__":
    main()
