"""The packages' structure as their source says it: imports point one way (no circle within comparisons/, v2v_core/
and v2v_core/toy/), and the layers point downward (the core never imports comparisons or the UI)."""
import ast
from pathlib import Path

from conftest import ROOT

PACKAGES = ("comparisons", "v2v_core")


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in (ROOT / pkg).rglob("*.py"):
            parts = f.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports, at module level or inside a function (a lazy import is an import)."""
    mods = modules()
    graph = {}
    for name, f in mods.items():
        package = name if f.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                prefix = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module
                deps |= {f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in mods else prefix for a in node.names}
        graph[name] = {d for d in deps if d in mods and d != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The graph's strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_checker_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_in_the_packages():
    graph = import_graph()
    assert "comparisons.runner" in graph and "v2v_core.toy.arch" in graph and graph["comparisons.runner"]
    assert cycles(graph) == []


def test_the_core_never_imports_upward():
    upward = {m: sorted(d for d in deps if d.startswith("comparisons")) for m, deps in import_graph().items()
              if m.startswith("v2v_core")}
    assert {m: d for m, d in upward.items() if d} == {}
    for f in (ROOT / "v2v_core").rglob("*.py"):
        assert "import gradio" not in f.read_text() and "from gradio" not in f.read_text(), f
