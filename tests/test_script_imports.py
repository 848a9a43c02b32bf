"""The research scripts (docs/eval/*.py) and benchmarks (bench/*.py) name what they import from
the package correctly: a rename in the package broke docs/eval/finetune_backbone.py on start (an
audit found it; EVALUATION.md gives its commands). Checked statically, without running them."""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted([*ROOT.glob("docs/eval/*.py"), *ROOT.glob("bench/*.py")])


def package_imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) of every ``from indexer… import name`` in the script."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "indexer" and not node.level:
            found += [(node.module, alias.name) for alias in node.names]
    return found


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_script_imports_only_names_the_package_has(script):
    imports = package_imports(script)
    for module_name, name in imports:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # an extra this environment lacks (torch for training)
            if (exc.name or "").startswith("indexer"):
                raise
            pytest.skip(f"{module_name} needs {exc.name}")
        assert hasattr(module, name) or importlib.util.find_spec(f"{module_name}.{name}") is not None, (
            f"{script.name}: {module_name} has no {name}")
