"""The package's import graph, read from the source (nothing is imported): no import circles,
and imports point down the layers of README's Layout.

Every import counts, top-level and inside functions alike: the lazy imports that keep the CLI's
start fast still run, and a circle through one is a circle that a later refactoring (moving
the import to the top) turns into an ImportError. Imports under ``if TYPE_CHECKING:`` never
run and do not count. An import of ``pkg.mod`` is an edge to that module, not to its package's
``__init__`` (Python runs it first, but every package's ``__init__`` may import its own
submodules without that being a circle)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "sae_hacking"

# Lowest first. A module may import its own top-level part (e.g. absorption.pairs.run ->
# absorption.configs) and any part of a lower layer; the bottom layer's small modules also
# import one another (the circle test keeps that sound). The package root sits at the bottom:
# it holds __version__ and loads its public API lazily (importlib, by name).
LAYERS: list[set[str]] = [
    {"", "errors", "atomic", "config", "config_checks", "device", "folders", "hub", "threads"},
    {"data"},
    {"lm"},
    {"saes"},
    {"runs"},
    # Imports only the bottom layer (asserted below), so the analyses call it for their outputs.
    {"reports"},
    {"training"},
    {"toy", "train"},
    # Above training: absorption-bench trains the SAEs it searches (with `train`'s run).
    {"absorption"},
    {"serve"},
    {"cli"},
    # Entry points: `python -m sae_hacking` and the legacy scripts.
    {
        "__main__",
        "gemma_cooccurrences",
        "gemma_selective_ablate",
        "look_for_pairs",
        "gemma_graph",
        "graph_network",
        "find_4tuples",
        "plot_effect_l0",
        "gemma_cluster",
        "look_for_cosine_sim_pairs",
        "filter_results",
        "filter_results2",
        "convert_json_to_safetensors",
        "print_cooccurrences",
        "prompt_client",
        "prompt_server",
        "train_sae",
        "train_topk_sae",
        "train_topk_sae_toy",
    },
]
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}


def module_files() -> dict[str, Path]:
    modules = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _statements(body: list[ast.stmt]):
    """Every statement, however nested (function and class bodies included), except the
    bodies of ``if TYPE_CHECKING:``."""
    for node in body:
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            yield from _statements(node.orelse)
            continue
        yield node
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            inner = getattr(node, field, None)
            if isinstance(inner, list):
                yield from _statements([n for n in inner if isinstance(n, ast.AST)])


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that module ``name`` imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in _statements(ast.parse(path.read_text(encoding="utf-8")).body):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in modules else base)
    return {m for m in found if m in modules and m != name}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def part_of(module: str) -> str:
    """The top-level part (``sae_hacking.absorption.pairs.run`` -> ``absorption``)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_the_graph_sees_lazy_imports(graph):
    # A function-level import (the run modules import their accumulators only when run) and a
    # top-level one: if these were missed, the tests below would pass on an empty graph.
    assert (
        "sae_hacking.absorption.cooccurrence.accumulator"
        in graph["sae_hacking.absorption.cooccurrence.run"]
    )
    assert (
        "sae_hacking.absorption.cooccurrence.identity"
        in graph["sae_hacking.absorption.cooccurrence.accumulator"]
    )
    assert "sae_hacking.saes.releases" in graph["sae_hacking.saes.source"]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle (``[a, b, ..., a]``), or None (depth-first search, iterative)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if start in state:
            continue
        path = [start]
        stack = [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circles(graph):
    assert find_cycle(graph) is None


def test_every_part_has_a_layer(graph):
    assert {part_of(m) for m in graph} <= set(RANK), "add the new part to LAYERS"


def test_imports_point_down_the_layers(graph):
    upward = [
        f"{source} -> {target}"
        for source, targets in graph.items()
        for target in targets
        if part_of(source) != part_of(target)
        and RANK[part_of(target)] >= RANK[part_of(source)]
        and RANK[part_of(source)] > 0
    ]
    assert upward == []


def test_reports_import_only_the_bottom_layer(graph):
    reports = {m: t for m, t in graph.items() if part_of(m) == "reports"}
    assert reports
    assert {part_of(t) for targets in reports.values() for t in targets} - {"reports"} <= LAYERS[0]
