"""The import graph of backend/ and app/ by package, checked against the layer order, drawn as Mermaid.

    python scripts/layers.py            # print the package graph as a Mermaid flowchart
    python scripts/layers.py --check    # exit 1 if a module imports a package of a higher layer,
                                        # or the modules import each other in a cycle
    python scripts/layers.py --write docs/ARCHITECTURE.md   # refresh the diagram between its markers

Read from the code (ast, every import statement, also the lazy ones inside functions), not drawn by hand.
"""
from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Lowest first. A package may import the layers below it, never one above nor a sibling of its own layer.
LAYERS: list[tuple[str, ...]] = [
    ("backend.core",),
    ("backend.attacks", "backend.imports"),
    ("backend.explain", "backend.train"),
    ("backend.eval",),
    ("backend.service",),
    ("backend.transport",),
    ("app.session",),
    ("app.widgets",),
    ("app.views",),
    ("app.main",),
]
# The app reaches the backend through app.session only (its client is the one boundary).
BACKEND_GATE = "app.session"
BEGIN, END = "<!-- layers:begin (scripts/layers.py --write) -->", "<!-- layers:end -->"


def package_of(module: str) -> str | None:
    """The layer package a dotted module belongs to (backend/__init__ counts as core)."""
    if module == "backend":
        return "backend.core"
    for layer in LAYERS:
        for pkg in layer:
            if module == pkg or module.startswith(pkg + "."):
                return pkg
    return None


def rank(pkg: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if pkg in layer)


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _statements(path: Path, root: Path) -> list[tuple[str, list[str]]]:
    """Every import statement of a file as (module, names imported from it): `import a.b` gives
    ("a.b", []), `from a import b, c` gives ("a", ["b", "c"]) (relative imports resolved)."""
    mod = module_name(path, root)
    base = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    out: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.extend((a.name, []) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            stem = base[: len(base) - (node.level - 1)] if node.level else []
            out.append((".".join(stem + ([node.module] if node.module else [])), [a.name for a in node.names]))
    return out


def _ours(names: set[str]) -> set[str]:
    return {m for m in names if m.split(".")[0] in ("backend", "app")}


def imports_of(path: Path, root: Path = ROOT) -> set[str]:
    """Absolute names of the project modules a file imports (relative imports resolved)."""
    out: set[str] = set()
    for name, names in _statements(path, root):
        out.add(name)
        out.update(f"{name}.{a}" for a in names)  # `from backend import attacks`
    return _ours(out)


def graph(root: Path = ROOT) -> tuple[dict[tuple[str, str], int], list[str]]:
    """(package -> package edge counts, layer violations as readable lines) of the tree at root."""
    edges: dict[tuple[str, str], int] = defaultdict(int)
    bad = []
    files = sorted((root / "backend").rglob("*.py")) + sorted((root / "app").rglob("*.py"))
    for f in files:
        src = package_of(module_name(f, root))
        if src is None:
            continue
        targets = {package_of(m) for m in imports_of(f, root)} - {None, src}
        for dst in sorted(t for t in targets if t):
            if src.startswith("app.") and src != BACKEND_GATE and dst.startswith("backend."):
                bad.append(f"{f.relative_to(root)} ({src}) imports {dst}: the app reaches the backend "
                           f"through {BACKEND_GATE} only")
            edges[(src, dst)] += 1
            if rank(dst) > rank(src):
                bad.append(f"{f.relative_to(root)} ({src}) imports {dst}, a higher layer")
            elif rank(dst) == rank(src):
                bad.append(f"{f.relative_to(root)} ({src}) imports {dst}, a sibling of its layer")
    return dict(edges), bad


def module_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """module -> the project modules it imports (every import statement, lazy ones included). `import
    a.b.c` and `from a.b import c` are imports of the module a.b.c when that is a module of the tree
    (not of the package a.b that holds it), `from a.b import name` of a.b; a name that is no module of
    the tree counts as the nearest enclosing one."""
    files = sorted((root / "backend").rglob("*.py")) + sorted((root / "app").rglob("*.py"))
    modules = {module_name(f, root): f for f in files}
    out: dict[str, set[str]] = {}
    for mod, f in modules.items():
        deps = set()
        for name in direct_imports(f, root):
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != mod:
                deps.add(name)
        out[mod] = deps
    return out


def direct_imports(path: Path, root: Path = ROOT) -> set[str]:
    """The names a file imports, one per imported thing: `from a.b import c` gives a.b.c if that is a
    file or folder of the tree, else a.b (relative imports resolved)."""
    out: set[str] = set()
    for name, names in _statements(path, root):
        if not names:
            out.add(name)
        for a in names:
            sub = root.joinpath(*f"{name}.{a}".split("."))
            out.add(f"{name}.{a}" if sub.with_suffix(".py").is_file() or sub.is_dir() else name)
    return _ours(out)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles: each strongly connected component of more than one module (Tarjan's
    algorithm, iterative), sorted; [] when the imports form a DAG."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
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
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return sorted(found)


def mermaid(edges: dict[tuple[str, str], int]) -> str:
    lines = ["```mermaid", "flowchart BT"]
    for i, layer in enumerate(LAYERS):
        lines.append(f"  subgraph L{i}[\" \"]")
        lines.extend(f"    {p.replace('.', '_')}[{p}]" for p in layer)
        lines.append("  end")
    lines.extend(f"  {a.replace('.', '_')} --> {b.replace('.', '_')}" for (a, b) in sorted(edges))
    lines.append("```")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 on an import that goes up a layer or sideways")
    ap.add_argument("--write", type=Path, help="replace the diagram between the markers in this file")
    a = ap.parse_args(argv)
    edges, bad = graph()
    loops = cycles(module_graph())
    if a.check:
        bad += [f"import cycle: {' -> '.join(c)} -> {c[0]}" for c in loops]
        print("\n".join(bad) or f"layers ok: {len(edges)} package edges, none upward or sideways; no import cycle")
        return 1 if bad else 0
    if loops:  # the picture is drawn anyway; say what --check would refuse
        print("\n".join(f"import cycle: {' -> '.join(c)} -> {c[0]}" for c in loops), file=sys.stderr)
    text = mermaid(edges)
    if a.write:
        doc = a.write.read_text()
        if BEGIN not in doc or END not in doc:
            raise SystemExit(f"{a.write}: no {BEGIN} ... {END} markers")
        head, rest = doc.split(BEGIN, 1)
        a.write.write_text(head + BEGIN + "\n" + text + "\n" + END + rest.split(END, 1)[1])
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
