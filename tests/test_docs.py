"""docs/design.md names code that exists: every ``file: name`` it gives (the equation → code table and
the other "`path.py`: `name`" references) is checked with ``ast`` (nothing is imported)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DESIGN = ROOT / "docs" / "design.md"

#: "`file.py`: `name`, `Class.method` / `.other`; ...": up to the end of the table cell, a ';', a ')'
#: or the next "`file.py`"
_REF = re.compile(r"`([\w/]+\.py)`:((?:[^|;`)\n]|(?!`[\w/]+\.py`)`[^`\n]*`)*)")
_NAME = re.compile(r"`(\.?[A-Za-z_][\w.]*)`")


def references(text: str) -> list[tuple[str, list[str]]]:
    """[(file, [names])] of every "`file.py`: `a`, `B.c` / `.d`" in ``text`` (``.d`` is read as ``B.d``)."""
    out = []
    text = re.sub(r"\([^()`]*\)", "", text)  # remarks in parentheses, e.g. "`pose_reg` (45 components)"
    for path, rest in _REF.findall(text):
        names, owner = [], None
        for name in _NAME.findall(rest):
            if name.startswith(".") and owner:
                name = owner + name
            owner = name.rsplit(".", 1)[0] if "." in name else owner
            names.append(name)
        if names:
            out.append((path, names))
    return out


def resolve(path: str, root: Path = ROOT) -> Path:
    """A path of the docs: from the repository root when it is there, else under handprop_jax/."""
    return root / path if (root / path).is_file() else root / "handprop_jax" / path


def defined(tree: ast.Module, name: str) -> bool:
    """``name`` (``f`` or ``Class.attr``) is defined at the top of ``tree`` (def, class, assignment)."""
    body, parts = tree.body, name.split(".")
    for i, part in enumerate(parts):
        node = next((n for n in body if _names(n) and part in _names(n)), None)
        if node is None:
            return False
        if i < len(parts) - 1:
            if not isinstance(node, ast.ClassDef):
                return False
            body = node.body
    return True


def _names(node: ast.stmt) -> set[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, ast.Assign):
        return {t.id for t in node.targets if isinstance(t, ast.Name)}
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return {node.target.id}
    return set()


def missing(text: str, root: Path = ROOT) -> list[str]:
    out = []
    for path, names in references(text):
        file = resolve(path, root)
        if not file.is_file():
            out.append(f"{path}: no such file")
            continue
        tree = ast.parse(file.read_text())
        out += [f"{path}: {name}" for name in names if not defined(tree, name)]
    return out


def test_reference_parser_and_checker(tmp_path):
    (tmp_path / "handprop_jax" / "training").mkdir(parents=True)
    (tmp_path / "handprop_jax" / "training" / "objectives.py").write_text(
        "X = 1\nclass Model:\n    def regress(self): ...\n    def predict(self): ...\n"
        "def stage3_loss(): ...\n")
    text = ("| 9 | L | `training/objectives.py`: `stage3_loss`, `Model.regress` / `.predict`; "
            "`training/steps.py`: `_stage3_loss` (a remark), `X` | stage 3 `only` |\n"
            "the optimizer (`training/objectives.py`: `X`) and `training/objectives.py`: `Model.fit`.\n")
    assert references(text) == [("training/objectives.py", ["stage3_loss", "Model.regress", "Model.predict"]),
                                ("training/steps.py", ["_stage3_loss", "X"]),
                                ("training/objectives.py", ["X"]), ("training/objectives.py", ["Model.fit"])]
    assert missing(text, tmp_path) == ["training/steps.py: no such file", "training/objectives.py: Model.fit"]


def test_design_md_names_code_that_exists():
    text = DESIGN.read_text()
    table = text.split("## Equations → code", 1)[1].split("\n\n", 1)[0]
    refs = references(table)
    assert len([r for r in table.splitlines() if re.match(r"\| \d+ \|", r)]) == 10  # Eqs. 1-10
    assert ("training/objectives.py", ["stage3_loss"]) in refs and len(refs) >= 15
    assert not missing(text), "docs/design.md names what does not exist: " + "; ".join(missing(text))


def commands_with_non_ascii(text: str) -> list[str]:
    """Code spans and code-block lines of ``text`` that are commands (``handprop``, ``make``,
    ``python``, ``pip``, ``.venv/bin/...``) with a non-ASCII character (a Unicode minus or dash breaks
    copy-paste); a ``# comment`` after the command is prose."""
    spans = re.findall(r"`([^`\n]+)`", text) + text.splitlines()
    start = re.compile(r"\s*(\$ )?(handprop|make|python3?|pip|\.venv/bin/)\b")
    commands = (s.split(" #")[0].strip() for s in spans if start.match(s))  # a comment may be prose
    return sorted({c for c in commands if not c.isascii()})


def test_readme_is_for_users():
    """README holds what a user needs (issue 26: about 12 KB); measurements and history live in docs/."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) <= 12 * 1024
    for heading in ("## Two commands", "## Using it", "## Propagating your own labels"):
        assert heading in readme, heading


def test_commands_in_the_docs_are_ascii():
    assert commands_with_non_ascii("`handprop demo −-compare` and `handprop train --set a=1  # → γ`") == [
        "handprop demo −-compare"]
    bad = {p.name: commands_with_non_ascii(p.read_text())
           for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]}
    assert not any(bad.values()), {k: v for k, v in bad.items() if v}
