"""The layout holds: the ML core and the data pipeline know nothing of the app, functions stay short,
and nothing edits ``sys.path`` to find the package."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ("vae", "preprocessing")
UI_PACKAGES = ("gradio", "matplotlib")
SOURCES = [*sorted(p for folder in ("vae", "preprocessing", "studio", "benchmarks", "scripts")
                   for p in (ROOT / folder).rglob("*.py")), ROOT / "app.py"]


def core_modules() -> list[Path]:
    return sorted(p for package in CORE for p in (ROOT / package).rglob("*.py"))


def imported(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_imports_no_ui_package(path):
    assert not imported(ast.parse(path.read_text())) & set(UI_PACKAGES)


def test_importing_the_whole_core_loads_no_ui_package():
    """At run time too (an indirect import would not show in the module's own imports)."""
    modules = [".".join(p.relative_to(ROOT).with_suffix("").parts) for p in core_modules()
               if p.name != "__main__.py"]
    code = (f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {UI_PACKAGES!r}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


UI_WORDING = re.compile(r"<(div|span|br|b|p)\b|\*\*\w|\bthe (Dataset|Train|Reconstruct|Explore) tab\b|press \w+")


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_holds_no_ui_wording(path):
    """No HTML, markdown emphasis, tab names or "press <button>" in the core's strings (docstrings aside)."""
    tree = ast.parse(path.read_text())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    found = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
             and id(n) not in docstrings and UI_WORDING.search(n.value)]
    assert found == []


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_functions_are_short(path):
    long = [(n.name, n.end_lineno - n.lineno + 1) for n in ast.walk(ast.parse(path.read_text()))
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.end_lineno - n.lineno + 1 > 80]
    assert long == []


@pytest.mark.parametrize("path", [*SOURCES, *sorted((ROOT / "tests").rglob("*.py"))],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_nothing_edits_sys_path(path):
    assert "sys.path.insert" not in path.read_text() or path.name == "test_layout.py"
