"""The device runtime's modules import each other one way only.

Reads device/lib/uota with CPython's ast (no device, no extension module):
every import of a uota module, at module level or inside a function, is an
edge of the graph, and the graph must have no cycle. A lazy (in-function)
import is how a module keeps another out of RAM until it is needed; it does
not excuse a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

RUNTIME = Path(__file__).resolve().parents[2] / "device" / "lib" / "uota"


def module_name(path: Path) -> str:
    """uota.server for lib/uota/server.py, uota.transports for its __init__.py."""
    parts = ["uota", *path.relative_to(RUNTIME).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def runtime_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(RUNTIME.rglob("*.py"))}


def imports_of(path: Path, known: set[str]) -> tuple[set[str], set[str]]:
    """The uota modules path imports: (at module level, inside functions)."""
    tree = ast.parse(path.read_text(), str(path))
    eager: set[str] = set()
    lazy: set[str] = set()

    def visit(node: ast.AST, in_function: bool) -> None:
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from uota import hal` imports uota.hal; `from uota.layout
            # import STAGE` imports uota.layout.
            for alias in node.names:
                sub = node.module + "." + alias.name
                names.append(sub if sub in known else node.module)
        for name in names:
            if name in known:
                (lazy if in_function else eager).add(name)
        inner = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(tree, False)
    # Importing a submodule runs its package's __init__ too; that is not an
    # edge of its own: only what a module names counts.
    me = module_name(path)
    eager.discard(me)
    lazy.discard(me)
    return eager, lazy


def import_graph() -> dict[str, dict[str, bool]]:
    """module -> {imported module: True when only imported inside functions}."""
    modules = runtime_modules()
    known = set(modules)
    graph = {}
    for name, path in modules.items():
        eager, lazy = imports_of(path, known)
        graph[name] = {m: m not in eager for m in eager | lazy}
    return graph


def cycles(graph: dict[str, dict[str, bool]]) -> list[list[str]]:
    """One cycle (a -> ... -> a) for each strongly connected group of
    modules (Tarjan), so every knot shows up once."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return [cycle_within(graph, set(g)) + ["(knot: %s)" % ", ".join(g)] for g in groups]


def cycle_within(graph: dict[str, dict[str, bool]], group: set[str]) -> list[str]:
    """A shortest path from the group's first module back to itself."""
    start = min(group)
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v]):
            if w == start:
                return paths[v] + [start]
            if w in group and w not in paths:
                paths[w] = paths[v] + [w]
                queue.append(w)
    raise AssertionError("a strongly connected group without a cycle: %s" % sorted(group))


def describe(graph: dict[str, dict[str, bool]], cycle: list[str]) -> str:
    *cycle, knot = cycle
    steps = []
    for a, b in zip(cycle, cycle[1:]):
        steps.append("%s -%s-> %s" % (a, "lazy" if graph[a][b] else "", b))
    return "  " + "\n  ".join(steps + [knot])


def test_the_graph_is_read() -> None:
    graph = import_graph()
    assert "uota.server" in graph and "uota.transports.wifi_tcp" in graph
    assert graph["uota.server"]["uota.wire"] is False  # at module level
    assert graph["uota.transports"]["uota.transports.wifi_tcp"] is True  # in a function


def test_device_runtime_imports_have_no_cycle() -> None:
    graph = import_graph()
    found = cycles(graph)
    listing = "\n".join(
        "%s: %s" % (m, ", ".join(sorted(n + (" (lazy)" if lazy else "") for n, lazy in graph[m].items())) or "-")
        for m in sorted(graph)
    )
    assert not found, "import cycles in device/lib/uota:\n%s\n\nall imports:\n%s" % (
        "\n\n".join(describe(graph, c) for c in found),
        listing,
    )


def test_no_module_imports_a_module_both_ways() -> None:
    """A module imported at module level is not imported again inside a
    function (such a lazy import would keep nothing out of RAM)."""
    modules = runtime_modules()
    known = set(modules)
    both = []
    for name, path in modules.items():
        eager, lazy = imports_of(path, known)
        both += ["%s: %s" % (name, m) for m in sorted(eager & lazy)]
    assert not both, both


def test_the_documented_module_graph_is_the_real_one() -> None:
    """docs/device-runtime.md, "Module graph": one line per module,
    "- `name`: what it owns; imports `a`, `b`; later `c`." (or "imports
    nothing")."""
    doc = (RUNTIME.parents[2] / "docs" / "device-runtime.md").read_text()
    section = doc.split("### Module graph", 1)[1].split("\n#", 1)[0]
    documented: dict[str, dict[str, bool]] = {}
    for line in section.splitlines():
        if not line.startswith("- `"):
            continue
        name = line[3 : line.index("`", 3)]
        module = "uota" if name == "uota" else "uota." + name
        edges: dict[str, bool] = {}
        for part in line.rstrip(".").split("; "):
            for word, lazy in (("imports ", False), ("later ", True)):
                if part.startswith(word) and part != "imports nothing":
                    for m in part[len(word) :].split(", "):
                        edges["uota." + m.strip("`")] = lazy
        documented[module] = edges
    real = import_graph()
    wrong = {
        m: (documented.get(m), real.get(m)) for m in set(documented) | set(real) if documented.get(m) != real.get(m)
    }
    assert not wrong, "module: (documented, real) imports (True: only inside functions)\n%s" % "\n".join(
        "%s: %s" % (m, wrong[m]) for m in sorted(wrong)
    )
