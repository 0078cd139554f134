"""The packages' import graph is acyclic.

Every module of ``mano_jax``, ``handprop_jax`` and ``handprop_datasets`` (the ``datasets/`` folder) is
parsed with ``ast`` (nothing is imported); every ``import`` / ``from ... import`` statement, at module
level or inside a function, is an edge to the module it names (``from package import name`` names
the submodule ``package.name`` when there is one, else ``package`` itself). A cycle is printed as the
chain of modules that closes it.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"mano_jax": ROOT / "mano_jax", "handprop_jax": ROOT / "handprop_jax",
            "handprop_datasets": ROOT / "datasets"}


def module_files(packages: dict[str, Path]) -> dict[str, Path]:
    """Module name → file, for every .py file below each package folder."""
    out = {}
    for name, folder in packages.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([name, *parts])] = path
    return out


def imports_of(module: str, path: Path, modules: set[str]) -> set[str]:
    """The modules of ``modules`` that ``module`` (source file ``path``) imports anywhere in its body."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = module.split(".")
                anchor = anchor[:len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in modules else base)
    return {m for m in found if m in modules and m != module}


def import_graph(packages: dict[str, Path] = PACKAGES) -> dict[str, set[str]]:
    files = module_files(packages)
    return {m: imports_of(m, p, set(files)) for m, p in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle [a, b, ..., a] of ``graph`` (module → imported modules), or None (iterative DFS)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_cycle_finder_and_parser_on_a_small_tree(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import c\n")
    (pkg / "a.py").write_text("import os\nfrom pkg.sub import c\n")
    (pkg / "b.py").write_text("def f():\n    from pkg import a  # function-level\n")
    (pkg / "sub" / "c.py").write_text("from ..b import f\n")
    graph = import_graph({"pkg": pkg})
    assert graph["pkg.a"] == {"pkg.sub.c"}
    assert graph["pkg.b"] == {"pkg.a"}
    assert graph["pkg.sub.c"] == {"pkg.b"}
    assert graph["pkg.sub"] == {"pkg.sub.c"}
    cycle = find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1] and set(cycle) == {"pkg.a", "pkg.b", "pkg.sub.c"}
    (pkg / "b.py").write_text("def f():\n    pass\n")
    assert find_cycle(import_graph({"pkg": pkg})) is None


def test_packages_have_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 60 and "handprop_jax.training.steps" in graph  # really parsed the packages
    assert "handprop_jax.model.api" in graph["handprop_jax.training.steps"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
