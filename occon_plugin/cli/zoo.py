"""``occon-zoo list | fetch NAME | verify NAME | convert SRC DST``: the checkpoint zoo."""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from occon_plugin.errors import USAGE_EXIT_CODE, ConfigError, OcconError, print_error
from occon_plugin.zoo.registry import fetch, get_entry, load_manifest, verify


def _list(args) -> int:
    entries = load_manifest(args.manifest)
    header = ("name", "architecture", "method", "dataset", "host", "fetchable", "license")
    rows = [header]
    for e in entries.values():
        fetchable = "in wheel" if e.in_wheel else ("yes" if e.url and e.sha256 else "no (url/sha256 unknown)")
        rows.append((e.name, e.architecture, e.method, e.dataset, str(e.host_generation), fetchable,
                     e.license.split(" (")[0]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def _fetch(args) -> int:
    path = fetch(get_entry(args.name, args.manifest), args.dir)
    print(f"{args.name}: {path} (sha256 verified)")
    return 0


def _verify(args) -> int:
    entry = get_entry(args.name, args.manifest)
    path = verify(entry, args.path, args.dir)
    print(f"{args.name}: {path} sha256 OK ({entry.sha256})")
    return 0


def _convert(args) -> int:
    from occon_plugin.models.checkpoint import convert_checkpoint, mlp_layers

    d = convert_checkpoint(args.src, args.dst, use_momentum=args.momentum)

    def head(state):
        if state is None:
            return "none"
        return "-".join(l[0] if l[0] != "linear" else f"linear({l[1]}->{l[2]})" for l in mlp_layers(state))

    stem = " (CIFAR stem)" if d["arch_kwargs"].get("cifar_stem") else ""
    print(f"{args.src} ({d['meta'].get('source_layout', 'occon')}) -> {args.dst}: {d['arch']}{stem}, "
          f"projector {head(d['projector'])}, predictor {head(d.get('predictor'))}, "
          f"normalization {d['normalization']['source']}")
    for key in ("projector_dropped", "predictor_dropped", "stripped_prefixes", "backbone_head_dropped"):
        if key in d["meta"]:
            print(f"  {key}: {d['meta'][key]}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line ``[occon] error: ...`` and exit 2, as in every plugin command."""

    def error(self, message: str):
        print_error(ConfigError(f"{self.prog}: {message} (see {self.prog} --help)"))
        sys.exit(USAGE_EXIT_CODE)


def build_parser() -> argparse.ArgumentParser:
    """The ``occon-zoo`` argument parser (sub-commands list, fetch, verify, convert)."""
    parser = _Parser(prog="occon-zoo", description=__doc__)
    parser.add_argument("--manifest", default=None, help="zoo manifest (default: $OCCON_ZOO_MANIFEST or zoo/manifest.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the zoo").set_defaults(func=_list)
    p = sub.add_parser("fetch", help="download (or locate) a checkpoint and verify its sha256")
    p.add_argument("name")
    p.add_argument("--dir", default=None, help="cache folder (default: $OCCON_ZOO_CACHE or ~/.cache/occon/zoo)")
    p.set_defaults(func=_fetch)
    p = sub.add_parser("verify", help="re-check the sha256 of a fetched checkpoint")
    p.add_argument("name")
    p.add_argument("--path", default=None, help="file to check (default: where fetch puts it)")
    p.add_argument("--dir", default=None)
    p.set_defaults(func=_verify)
    p = sub.add_parser("convert", help="convert a solo-learn / authors' / torchvision / timm checkpoint to occon-ckpt/2")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--momentum", action="store_true", help="take the momentum encoder and projector")
    p.set_defaults(func=_convert)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The console command: returns its exit status (0; 2 for bad input: one line ``[occon] error: ...``;
    1 for a failure that is not the input's). Usage mistakes exit 2 with one line (SystemExit)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except OcconError as err:
        print_error(err)
        return USAGE_EXIT_CODE
    except (FileNotFoundError, ValueError) as err:  # not bad input (a bug, or the machine): still one line
        print_error(err)
        return 1


if __name__ == "__main__":
    sys.exit(main())
