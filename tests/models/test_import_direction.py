"""Import direction of the localization side, read from the source (every ``import``, also inside functions):
``zoo`` imports nothing of ``models`` (models -> zoo is the one direction: a zoo name is fetched, then read),
``models`` nothing of ``localize`` or ``zoo``'s CLI, and the modules of ``localize`` import each other without
a circle."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "occon_plugin"


def _imports(path: Path) -> set[str]:
    """Every ``occon_plugin...`` module ``path`` imports (``from X import y`` counts X and X.y)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("occon_plugin")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("occon_plugin"):
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def _module(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _folder(name: str) -> dict[str, set[str]]:
    return {_module(p): _imports(p) for p in sorted((PACKAGE / name).rglob("*.py"))}


def test_zoo_does_not_import_models_and_models_not_localize():
    for module, imports in _folder("zoo").items():
        assert not {i for i in imports if i.startswith("occon_plugin.models")}, module
    for module, imports in _folder("models").items():
        bad = {i for i in imports if i.startswith(("occon_plugin.localize", "occon_plugin.cli"))}
        assert not bad, (module, bad)


def test_localize_has_no_import_circle():
    graph = _folder("localize")
    modules = set(graph)
    edges = {m: {i for i in imports if i in modules and i != m and i != "occon_plugin.localize"}
             for m, imports in graph.items() if m != "occon_plugin.localize"}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            assert state.get(nxt) != 1, "import circle: " + " -> ".join(path + [node, nxt])
            if nxt not in state:
                visit(nxt, path + [node])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    assert len(edges) >= 10  # the scan saw the package's modules
