"""The shipped code holds no construct that fails at run time on CPython 3.9.

ruff (target-version py39) reports 3.10-only syntax and annotations that need
``from __future__ import annotations``, but not what only fails when it runs:
``isinstance(x, A | B)``, a ``|`` between types evaluated outside an annotation (a
module-level alias), ``zip(strict=)``, ``dataclass(slots=/kw_only=)``. The package tests run
the program under 3.9 itself; this scan also covers the paths they do not reach.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = [ROOT / "integration" / "workerwatch", ROOT / "heartbeat" / "workerwatch_heartbeat"]
TYPE_NAMES = {"int", "float", "str", "bool", "bytes", "list", "dict", "tuple", "set", "type"}


def _is_type_union(node: ast.AST) -> bool:
    """``A | B`` where a side is a type name, None, a subscripted generic or another union."""
    if not (isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr)):
        return False

    def typeish(side: ast.AST) -> bool:
        return (
            (isinstance(side, ast.Name) and (side.id in TYPE_NAMES or side.id[:1].isupper()))
            or (isinstance(side, ast.Constant) and side.value is None)
            or isinstance(side, ast.Subscript)
            or _is_type_union(side)
        )

    return typeish(node.left) and typeish(node.right)


def _annotation_nodes(tree: ast.AST) -> set[int]:
    """ids of every node inside an annotation (strings at run time under the future import)."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        roots = []
        if isinstance(node, (ast.AnnAssign, ast.arg)) and node.annotation is not None:
            roots.append(node.annotation)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns:
            roots.append(node.returns)
        for root in roots:
            inside.update(id(n) for n in ast.walk(root))
    return inside


def problems_in(path: Path, root: Path = ROOT) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    in_annotation = _annotation_nodes(tree)
    found = []
    for node in ast.walk(tree):
        where = f"{path.relative_to(root)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Match):
            found.append(f"{where}: match statement")
        if isinstance(node, ast.BinOp) and id(node) not in in_annotation and _is_type_union(node):
            found.append(f"{where}: `|` between types evaluated at run time")
        if isinstance(node, ast.Call):
            name = getattr(node.func, "id", getattr(node.func, "attr", ""))
            words = {k.arg for k in node.keywords}
            if name == "zip" and "strict" in words:
                found.append(f"{where}: zip(strict=)")
            if name == "dataclass" and words & {"slots", "kw_only", "match_args"}:
                found.append(f"{where}: dataclass({', '.join(sorted(words))})")
    return list(dict.fromkeys(found))  # ``A | B | C`` is nested unions: one line each


def test_the_scan_finds_each_construct(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from dataclasses import dataclass\n"
        "Value = bool | int | float | str\n"
        "def f(x: int | None) -> str | None:\n"
        "    y: list[int] | None = None\n"
        "    if isinstance(x, int | float):\n"
        "        return zip(x, y, strict=True)\n"
        "    return x | 4\n"
        "@dataclass(slots=True)\n"
        "class C:\n"
        "    a: int | None = None\n"
    )
    found = sorted(problems_in(sample, tmp_path), key=lambda p: int(p.split(":")[1]))
    got = [line.split(": ", 1)[1] for line in found]
    assert got == [
        "`|` between types evaluated at run time",
        "`|` between types evaluated at run time",
        "zip(strict=)",
        "dataclass(slots)",
    ]


def test_shipped_code_runs_on_39():
    found = [p for folder in SHIPPED for path in sorted(folder.rglob("*.py")) for p in problems_in(path)]  # fmt: skip
    assert found == []
