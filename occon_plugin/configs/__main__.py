"""``python -m occon_plugin.configs [pretrain|linear|cli]``: print where the shipped YAMLs are.

Without an argument: one ``<kind>: <folder>`` line per kind. With a kind: only its folder (for
``--config-path "$(python -m occon_plugin.configs pretrain)/coco"``). An unknown kind, or a kind
with no YAML installed, prints one ``[occon] error:`` line and exits 2.
"""
from __future__ import annotations

import sys
from typing import Optional, Sequence

from occon_plugin.configs import CLI_CONFIG_DIR, KINDS, packaged_config_dir
from occon_plugin.errors import USAGE_EXIT_CODE, ConfigError, print_error


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    folders = {kind: packaged_config_dir(kind) for kind in KINDS}
    folders["cli"] = CLI_CONFIG_DIR  # occon-localize / occon-eval-* (localize.yaml, eval_*.yaml)
    if not args:
        for kind, folder in folders.items():
            print(f"{kind}: {folder if folder is not None else '(not installed)'}")
        return 0
    if len(args) != 1 or args[0] not in folders:
        print_error(ConfigError(f"usage: python -m occon_plugin.configs [{'|'.join(folders)}]; got "
                                f"{' '.join(args)!r}"))
        return USAGE_EXIT_CODE
    folder = folders[args[0]]
    if folder is None:
        print_error(ConfigError(f"no {args[0]} YAMLs are installed with occon-plugin here (reinstall it)"))
        return USAGE_EXIT_CODE
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
