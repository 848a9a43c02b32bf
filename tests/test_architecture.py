"""The layout rules of docs/architecture.md, checked on the source: layers, cycles, sizes.

The import graph is read with :mod:`ast`, so imports inside functions count: a cycle hidden in a
function body is still a cycle for the next engineer who moves one of its modules.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "indexer"

MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60
# A longer function says why on a comment line inside it, starting with this.
LONG_FUNCTION_MARK = "# Long on purpose:"

# The layers of docs/architecture.md, lowest first. A module may import modules of its own layer
# and of the layers listed for it; the layer of a module is the first prefix that names it.
LAYERS: dict[str, tuple[str, ...]] = {
    "core": (),
    "assets": ("core",),
    "inference": ("core", "assets"),
    "stores": ("core", "assets", "inference"),
    "reading": ("core",),
    "api": ("core", "assets", "inference", "stores", "reading"),
    "evaluation": ("core", "assets", "inference", "stores", "reading", "api"),
    "training": ("core", "assets", "inference", "reading", "evaluation"),
    "web": ("core", "assets", "inference", "stores", "api"),
    "cli": ("core", "assets", "inference", "stores", "reading", "api", "evaluation", "training", "web"),
    "package": ("core", "assets", "inference", "stores", "reading", "api"),
}
# The store contract (records and protocol, no I/O) is core: the model folder stamps stores with it.
LAYER_OF_PREFIX: tuple[tuple[str, str], ...] = (
    ("indexer.assets", "assets"),
    ("indexer.stores.base", "core"),
    ("indexer.stores.filter_rules", "core"),
    ("indexer.stores", "stores"),
    ("indexer.reading", "reading"),
    ("indexer.evaluation", "evaluation"),
    ("indexer.training", "training"),
    ("indexer.web", "web"),
    ("indexer.cli", "cli"),
    ("indexer.encoder", "inference"),
    ("indexer.staged", "inference"),
    ("indexer.covered_rows", "inference"),
    ("indexer.stage_cache", "inference"),
    ("indexer.stage_loading", "inference"),
    ("indexer.runtime", "inference"),
    ("indexer.int8_kernel", "inference"),
    ("indexer.model_card", "inference"),
    ("indexer.model_folder", "inference"),
    ("indexer.catalog", "inference"),
    ("indexer.type_side", "inference"),
    ("indexer.api", "api"),
    ("indexer.pipeline", "api"),
    ("indexer.feedback", "api"),
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    name = ".".join(parts)
    return name[: -len(".__init__")] if name.endswith(".__init__") else name


@lru_cache(maxsize=1)
def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported(name: str, path: Path) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its source (function bodies too)."""
    known = modules()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(parent + ([node.module] if node.module else []))
            # ``from pkg import mod`` depends on the submodule, ``from mod import name`` on the module
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    return {name: imported(name, path) for name, path in modules().items()}


def layer(name: str) -> str:
    """The layer of a module: the package's ``__init__`` is the public facade, the rest by prefix."""
    if name == "indexer":
        return "package"
    for prefix, layer_name in LAYER_OF_PREFIX:
        if name == prefix or name.startswith(prefix + "."):
            return layer_name
    return "core"


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_checker_sees_a_cycle_and_a_layer() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert layer("indexer.stores.elasticsearch.store") == "stores"
    assert layer("indexer.records") == "core"
    assert "indexer.records" in imported("indexer.api", modules()["indexer.api"])


def test_no_import_cycles() -> None:
    assert cycles(graph()) == []


def test_layers_import_only_the_layers_below() -> None:
    wrong = []
    for name, targets in graph().items():
        mine = layer(name)
        for target in targets:
            theirs = layer(target)
            if theirs != mine and theirs not in LAYERS[mine]:
                wrong.append(f"{name} ({mine}) imports {target} ({theirs})")
    assert wrong == []


@pytest.mark.parametrize("name", sorted(modules()))
def test_module_size(name: str) -> None:
    lines = len(modules()[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_MODULE_LINES, f"{name} has {lines} lines; split it by concept"


def test_long_functions_say_why() -> None:
    unexplained = []
    for name, path in modules().items():
        source = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(source))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            length = node.end_lineno - node.lineno + 1
            body = source[node.lineno - 1 : node.end_lineno]
            if length > MAX_FUNCTION_LINES and not any(line.strip().startswith(LONG_FUNCTION_MARK) for line in body):
                unexplained.append(f"{name}:{node.lineno} {node.name} ({length} lines)")
    assert unexplained == []


def test_nothing_points_outside_the_repository() -> None:
    outside = [
        f"{path.relative_to(PACKAGE.parent)}:{number}"
        for path in modules().values()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if "DESIGN.md" in line or "../shared/DESIGN" in line or "CONVENTIONS.md" in line
    ]
    assert outside == []
