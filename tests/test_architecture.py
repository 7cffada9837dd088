"""Imports point down the layers of ARCHITECTURE.md, never up."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

LAYERS = ["cli", "api", "web", "services", "worker", "store", "evals", "serve", "engine", "models", "data", "config"]
SRC = Path(__file__).resolve().parents[1] / "src" / "tuneloop"
# Layers at the same height may not import each other either, except where named here.
SIDEWAYS_OK: set[tuple[str, str]] = set()


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "tuneloop" and parts[1] in LAYERS else None


def imports_of(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def test_every_layer_exists_only_in_the_list():
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages - set(LAYERS) <= {"examples"}, f"unknown top-level packages: {packages - set(LAYERS)}"


def test_imports_point_down():
    violations = []
    for path in SRC.rglob("*.py"):
        own = path.relative_to(SRC).parts[0]
        if own not in LAYERS:
            continue
        for lineno, module in imports_of(path):
            target = layer_of(module)
            if target and target != own and LAYERS.index(target) < LAYERS.index(own):
                violations.append(f"{path.relative_to(SRC)}:{lineno} ({own}) imports {module} ({target})")
    assert not violations, "imports that point up:\n" + "\n".join(violations)


def test_the_check_catches_an_upward_import(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("from tuneloop.cli.main import app\n")
    assert [layer_of(m) for _, m in imports_of(bad)] == ["cli"]
    assert LAYERS.index("cli") < LAYERS.index("data")


def names_in(path: Path) -> set[str]:
    """Every identifier, attribute, argument and string constant of a module, lower-cased."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, ast.Attribute):
            found.add(node.attr)
        elif isinstance(node, ast.arg):
            found.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            found.add(node.name)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.update(node.value.split())
    return {name.lower().strip(".,:;'\"()") for name in found}


METHOD_WORDS = {"head", "classifier", "label", "labels", "label_set", "labelled", "generative"}
"""Words that only one method's concerns would bring into the loop."""


@pytest.mark.parametrize("module", ["engine/loop.py", "engine/data.py"])
def test_the_loop_and_its_data_name_no_method(module):
    from tuneloop.engine.methods import registered

    names = names_in(SRC / module)
    named = sorted(names & (set(registered()) | METHOD_WORDS) | {n for n in names if "classif" in n or "sft" in n})
    assert not named, f"{module} names a method or a method's own concern: {named}"


def test_the_method_name_check_catches_a_method(tmp_path):
    bad = tmp_path / "loop.py"
    bad.write_text("def step(recipe):\n    if recipe.method == 'classify':\n        return self.head\n")
    assert {"classify", "head"} <= names_in(bad)
