"""Structure users and workers rely on: no import circles (inside functions too), picklable routers."""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import numpy as np
import pytest

import tryage
from tryage import ExpertLibrary, Recency, TryageRouter

PACKAGE = Path(tryage.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement of a module, inside functions too, but not under ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []

    def walk(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for sub in child.orelse:
                    walk(sub)
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append(child)
            walk(child)

    walk(tree)
    return found


def _import_graph() -> dict[str, set[str]]:
    """Module -> tryage modules it imports anywhere (inside functions too; not under TYPE_CHECKING)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            else:
                base = node.module or ""
                if node.level:
                    base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
                targets.add(base)
                targets.update(f"{base}.{a.name}" for a in node.names)
        # a package's modules may import their own package's __init__ only if it is not their importer
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return [*path[path.index(target):], target]
            if target not in state and (found := visit(target, [*path, target])):
                return found
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module, [module])):
            return found
    return None


def test_the_import_graph_of_tryage_has_no_cycle():
    graph = _import_graph()
    assert "tryage.errors" in graph["tryage.router"]  # the walk sees the package's real imports
    assert "tryage.predictors" in graph["tryage.router"]
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_circle():
    graph = {**_import_graph(), "tryage.errors": {"tryage.router"}}
    cycle = _find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1] and "tryage.errors" in cycle


def test_experts_never_imports_the_hub_at_module_level():
    assert not any(t.startswith("tryage.hub") for t in _import_graph()["tryage.experts"])


def test_constraints_with_recency_pickle_and_keep_their_penalties():
    library = ExpertLibrary.from_dict({"format_version": 1, "experts": [
        {"name": "old", "created_at": "2020-01-01", "last_modified": "2024-01-01"},
        {"name": "new", "created_at": "2023-01-01", "last_modified": "2021-01-01"}]})
    for constraint in (Recency(), Recency(date_field="last_modified"), tryage.Cost(), tryage.Size()):
        again = pickle.loads(pickle.dumps(constraint))
        if constraint.name == "recency":
            np.testing.assert_array_equal(again.penalties(library), constraint.penalties(library))
    assert list(pickle.loads(pickle.dumps(Recency(date_field="last_modified"))).penalties(library)) == [0.0, 1.0]


@pytest.mark.slow
def test_the_default_router_pickles_and_routes_identically():
    router = TryageRouter.default()
    prompts = ["Prove that the square root of 2 is irrational.", "Summarise this contract [Flag: smallest model]"]
    again = pickle.loads(pickle.dumps(router))
    for a, b in zip(router.route_batch(prompts), again.route_batch(prompts)):
        assert a.expert == b.expert and a.prompt == b.prompt
        np.testing.assert_allclose([s.predicted_loss for s in a.scores], [s.predicted_loss for s in b.scores])


def test_the_core_keeps_its_sizes_a_newcomer_can_read():
    """At most 16 modules at the top of the package, none over 500 lines, no function over 80 lines."""
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 16, f"{len(top)} modules at the top of tryage: {top}"
    too_long = []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > 500:
            too_long.append(f"{path.relative_to(PACKAGE)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                too_long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}()")
    assert not too_long, "over the size limits: " + "; ".join(too_long)
