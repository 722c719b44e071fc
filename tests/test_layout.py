"""The package's import graph has no circle (issue 20).

The graph is built from the source with ``ast``: every ``import occon_plugin...`` / ``from occon_plugin...
import ...`` / relative import, at module level AND inside functions (a function-level import is a circle
deferred, not removed). ``from pkg import name`` counts as an edge to ``pkg.name`` when that is a module, else
to ``pkg``. Not counted: the implicit import of parent packages' ``__init__`` (every module imports those;
counting them would make each package's ``__init__`` that re-exports a submodule a circle by definition).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "occon_plugin"


def modules(root: Path = ROOT) -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        out[".".join(parts)] = (path, is_package)
    return out


def import_graph(mods: dict[str, tuple[Path, bool]]) -> dict[str, set[str]]:
    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rsplit(".", 1)[0] if "." in name else ""
        return name or None

    edges: dict[str, set[str]] = {m: set() for m in mods}
    for module, (path, is_package) in mods.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = module.split(".") if is_package else module.split(".")[:-1]
                    base = base[:len(base) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                targets = [f"{source}.{alias.name}" for alias in node.names] or [source]
            for target in targets:
                if target.split(".")[0] != PACKAGE:
                    continue
                hit = resolve(target)
                if hit and hit != module:
                    edges[module].add(hit)
    return edges


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_graph_builder_finds_a_planted_circle(tmp_path):
    """The checker itself: a -> b -> c -> a (one of them a function-level import) is found; d is not in it."""
    pkg = tmp_path / PACKAGE
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from occon_plugin.sub import b\n")
    (pkg / "sub" / "b.py").write_text("from . import c\n")
    (pkg / "sub" / "c.py").write_text("def f():\n    import occon_plugin.a\n")
    (pkg / "d.py").write_text("from occon_plugin import a\n")
    assert circles(import_graph(modules(tmp_path))) == [["occon_plugin.a", "occon_plugin.sub.b", "occon_plugin.sub.c"]]


def test_the_package_has_no_import_circle():
    found = circles(import_graph(modules()))
    assert not found, "import circles (module-level and function-level imports): " + "; ".join(
        " <-> ".join(c) for c in found)


def test_methods_and_the_training_room_do_not_import_the_cli_layer():
    edges = import_graph(modules())
    bad = {m: sorted(t for t in targets if t.startswith(f"{PACKAGE}.cli"))
           for m, targets in edges.items()
           if m.startswith((f"{PACKAGE}.methods", f"{PACKAGE}.train", f"{PACKAGE}.augment", f"{PACKAGE}.host"))}
    assert not {m: t for m, t in bad.items() if t}


@pytest.mark.parametrize("module", ["occon_plugin.host"])
def test_the_host_adapter_imports_none_of_the_plugins_methods_or_pipelines(module):
    edges = import_graph(modules())
    assert not {t for t in edges[module] if t.startswith((f"{PACKAGE}.methods", f"{PACKAGE}.train", f"{PACKAGE}.cli"))}
