"""Imports point down the layers of ARCHITECTURE.md, never up."""

from __future__ import annotations

import ast
from pathlib import Path

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
