"""The packages' import graph is acyclic and every import points down the layers of docs/design.md.

Every module of ``mano_jax``, ``handprop_jax`` and ``handprop_datasets`` (the ``datasets/`` folder) is
parsed with ``ast`` (nothing is imported); every ``import`` / ``from ... import`` statement, at module
level or inside a function, is an edge to the module it names (``from package import name`` names
the submodule ``package.name`` when there is one, else ``package`` itself); so is an import by name,
``importlib.import_module("a.b")`` / ``__import__("a.b")``, and any string literal that is exactly a
module's dotted name (a registry that imports its entries by name, e.g. ``data.build.BUILDERS``).
A cycle is printed as the chain of modules that closes it; an upward import as "a (layer i) imports
b (layer j > i)", the layers being the numbered list of docs/design.md, "Layers".
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"mano_jax": ROOT / "mano_jax", "handprop_jax": ROOT / "handprop_jax",
            "handprop_datasets": ROOT / "datasets"}
DESIGN = ROOT / "docs" / "design.md"


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
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in modules:
            # import_module("a.b"), __import__("a.b"), or a name a registry imports later
            found.add(node.value)
    return {m for m in found if m in modules and m != module}


def import_graph(packages: dict[str, Path] = PACKAGES) -> dict[str, set[str]]:
    files = module_files(packages)
    return {m: imports_of(m, p, set(files)) for m, p in files.items()}


def parse_layers(text: str) -> list[list[str]]:
    """The layers of docs/design.md's "Layers" list (between ``<!-- layers: begin -->`` and
    ``<!-- layers: end -->``): one list of full module names per numbered line, lowest first; a name
    not starting with ``mano_jax`` or ``handprop_datasets`` is under ``handprop_jax``."""
    body = text.split("<!-- layers: begin -->", 1)[1].split("<!-- layers: end -->", 1)[0]
    layers = []
    for line in body.splitlines():
        if not re.match(r"\s*\d+\.", line):
            continue
        names = re.findall(r"`([A-Za-z_][\w.]*)`", line)
        layers.append([n if n.split(".")[0] in ("mano_jax", "handprop_datasets", "handprop_jax")
                       else f"handprop_jax.{n}" for n in names])
    return layers


def layer_of(module: str, layers: list[list[str]]) -> int | None:
    """Index of the layer whose most specific name is ``module`` or a package above it; None if none
    (``handprop_jax`` alone names only the package's ``__init__``, so that a new module must be placed)."""
    best, best_len = None, -1
    for i, names in enumerate(layers):
        for name in names:
            below = module.startswith(name + ".") and name != "handprop_jax"
            if (module == name or below) and len(name) > best_len:
                best, best_len = i, len(name)
    return best


def upward_imports(graph: dict[str, set[str]], layers: list[list[str]]) -> list[str]:
    """Every edge a → b of ``graph`` with b in a later layer than a, as text."""
    out = []
    for a in sorted(graph):
        for b in sorted(graph[a]):
            la, lb = layer_of(a, layers), layer_of(b, layers)
            if la is not None and lb is not None and lb > la:
                out.append(f"{a} (layer {la + 1}) imports {b} (layer {lb + 1})")
    return out


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


def test_name_based_imports_are_edges(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("import importlib\ndef f():\n    return importlib.import_module('pkg.b')\n")
    (pkg / "b.py").write_text("def g():\n    return __import__('pkg.c')\n")
    (pkg / "c.py").write_text("REGISTRY = {'x': 'pkg.a'}\nDOC = 'pkg.a is not a name here'\n")
    graph = import_graph({"pkg": pkg})
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.c"} and graph["pkg.c"] == {"pkg.a"}
    assert find_cycle(graph) is not None  # the loop a -> b -> c -> a is seen through the names


def test_layer_rule_on_a_small_tree():
    text = ("x\n<!-- layers: begin -->\n1. base: `errors`, `mano_jax`\n2. `data`, `propagation.inputs`\n"
            "3. `propagation`\n<!-- layers: end -->\n4. `cli` (outside the markers)\n")
    layers = parse_layers(text)
    assert layers == [["handprop_jax.errors", "mano_jax"],
                      ["handprop_jax.data", "handprop_jax.propagation.inputs"], ["handprop_jax.propagation"]]
    assert layer_of("mano_jax.io", layers) == 0
    assert layer_of("handprop_jax.propagation.inputs", layers) == 1  # the most specific name wins
    assert layer_of("handprop_jax.propagation.core", layers) == 2
    assert layer_of("handprop_jax.cli", layers) is None
    graph = {"handprop_jax.data.x": {"handprop_jax.errors", "handprop_jax.propagation.inputs"},
             "handprop_jax.propagation.inputs": {"handprop_jax.propagation.core"},
             "handprop_jax.propagation.core": {"handprop_jax.propagation.inputs"}}
    assert upward_imports(graph, layers) == [
        "handprop_jax.propagation.inputs (layer 2) imports handprop_jax.propagation.core (layer 3)"]


def test_every_import_points_down_the_layers_of_design_md():
    graph = import_graph()
    layers = parse_layers(DESIGN.read_text())
    assert len(layers) >= 10
    unplaced = sorted(m for m in graph if layer_of(m, layers) is None)
    assert not unplaced, f"modules not named in docs/design.md's Layers: {unplaced}"
    named = {n for names in layers for n in names}
    stale = sorted(n for n in named if not any(m == n or m.startswith(n + ".") for m in graph))
    assert not stale, f"docs/design.md's Layers names modules that do not exist: {stale}"
    # the layers are more than a list of every module: the registry's phases and the data builders
    assert "handprop_jax.training.pseudo" in graph["handprop_jax.training.registry"]
    assert "handprop_datasets.ho3d.ho3d_dataset_builder" in graph["handprop_jax.data.build"]
    upward = upward_imports(graph, layers)
    assert not upward, "imports from a lower layer into a higher one:\n" + "\n".join(upward)


#: files that may import our own modules inside functions, and why
LAZY_IMPORTS_ALLOWED = {
    # the command modules: `handprop CMD --help` imports only CMD's module, and it imports its work
    # when it runs
    "handprop_jax/cli.py", "handprop_jax/demo.py", "handprop_jax/data/cli.py",
    "handprop_jax/training/cli.py", "handprop_jax/evaluation/cli.py", "handprop_jax/propagation/cli.py",
    "handprop_jax/training/pretrain.py",
    # `train` lazily, so that training.parallel can call jax.distributed.initialize first
    "handprop_jax/training/__init__.py",
    # tfds's `tfds new` layout: the module re-exports the package's Builder
    "datasets/synthetic_hand_video/synthetic_hand_video_dataset_builder.py",
}


def function_level_imports(path: Path) -> list[str]:
    """``line: module`` of every import of our packages inside a function of ``path``."""
    out = []
    for fn in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else ["." * node.level + (node.module or "")] if isinstance(node, ast.ImportFrom)
                         else [])
                out += [f"{node.lineno}: {n}" for n in names
                        if n.startswith(".") or n.split(".")[0] in PACKAGES]
    return out


def test_own_imports_are_at_the_top(tmp_path):
    probe = tmp_path / "m.py"
    probe.write_text("import os\nfrom mano_jax import io\ndef f():\n    import json\n"
                     "    from handprop_jax.data import sparse\n    from . import x\n")
    assert function_level_imports(probe) == ["5: handprop_jax.data", "6: ."]
    lazy = {}
    for folder in PACKAGES.values():
        for path in sorted(folder.rglob("*.py")):
            rel = str(path.relative_to(ROOT))
            if rel not in LAZY_IMPORTS_ALLOWED and function_level_imports(path):
                lazy[rel] = function_level_imports(path)
    assert not lazy, f"imports of our modules inside functions (move them to the top): {lazy}"
