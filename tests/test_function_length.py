"""No function in forgegen/ or provision/ is over 80 lines (STYLE.md; issue 19's "done when").

A function's length runs from its first decorator (or ``def``) to its last line, nested
functions included; an AST walk measures every function and method, nested ones too.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 80


def long_functions(source: str, filename: str) -> list[tuple[str, int, int]]:
    """(``file:line``, name, length) of every function in ``source`` longer than LIMIT lines."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            length = (node.end_lineno or node.lineno) - start + 1
            if length > LIMIT:
                found.append((f"{filename}:{start}", node.name, length))
    return found


def test_no_function_in_forgegen_or_provision_is_over_80_lines() -> None:
    files = sorted(p for d in ("forgegen", "provision") for p in (ROOT / d).rglob("*.py"))
    assert len(files) > 40  # the walk found the packages
    too_long = [hit for p in files for hit in long_functions(p.read_text(encoding="utf-8"), str(p.relative_to(ROOT)))]
    assert too_long == [], "split these functions (at most 80 lines each): " + "; ".join(
        f"{where} {name} ({length} lines)" for where, name, length in too_long)


def test_the_measure_counts_decorators_and_nested_functions() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(78))
    at_limit = f"@decorator\ndef f():\n{body}\n"  # 80 lines with its decorator
    assert long_functions(at_limit, "m.py") == []
    over = f"@decorator\ndef f():\n{body}\n    return x0\n"
    assert long_functions(over, "m.py") == [("m.py:1", "f", 81)]
    nested = "class C:\n    def m(self):\n        def inner():\n" + "\n".join(f"            y{i} = {i}" for i in range(80))
    assert [name for _, name, _ in long_functions(nested, "n.py")] == ["m", "inner"]
