"""The layout holds: no module of `service` imports one that imports it back (directly
or around a circle, TYPE_CHECKING imports included), every module imports on its own,
with no other service module loaded first, and the graph replay and run share knows
nothing of Kafka or of `sfa run`."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "service"


def _modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = path
    return mods


def _imports(path: Path, mods: dict[str, Path]) -> set[str]:
    """The service modules a file names in any import statement, wherever it stands."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            while name and name not in mods:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        targets = _imports(path, mods)
        # a module and the packages that contain it (or that it contains) are one unit
        graph[name] = {
            t
            for t in targets
            if t != name and not name.startswith(t + ".") and not t.startswith(name + ".")
        }
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_a_planted_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert _cycle(graph) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_imports_in_a_circle() -> None:
    graph = _graph()
    assert len(graph) > 40  # the walk saw the package
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def _reach(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_the_shared_graph_imports_nothing_of_kafka_or_of_sfa_run() -> None:
    """Forwarding and the Kafka origin are handed in by the Kafka side (batches.py's
    Router and Origin protocols), so replay's graph needs none of it, even indirectly."""
    graph = _graph()
    for shared in ("service.pipeline", "service.batches"):
        reached = _reach(graph, shared)
        kafka = sorted(m for m in reached if m.startswith(("service.kafka", "service.run")))
        assert not kafka, f"{shared} reaches {kafka}"


_FRESH = """
import importlib, sys, traceback
failed = []
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "service" or m.startswith("service.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception:
        failed.append(name + ": " + traceback.format_exc().strip().splitlines()[-1])
print("\\n".join(failed))
"""


def test_every_module_imports_on_its_own() -> None:
    names = sorted(_modules())
    out = subprocess.run(
        [sys.executable, "-c", _FRESH, *names],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=120,
    )
    assert out.stdout.strip() == ""
