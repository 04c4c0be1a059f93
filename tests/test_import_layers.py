"""The package's import structure (README, "Architecture"): no module of tuner/ imports itself back through
others, and no folder imports one above it. Every import counts: top-level, inside functions and under
TYPE_CHECKING, since each is a dependency a reader has to follow."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "tuner"
BASE = frozenset({"tuner", "errors", "settings", "paths", "workload_model"})  # the package root and its plain modules
# What each folder may import besides itself, lowest layer first; see the README's Architecture section.
ALLOWED: dict[str, frozenset[str]] = {
    "tuner": BASE, "errors": BASE, "settings": BASE, "paths": BASE, "workload_model": BASE,
    "kernels": BASE,
    "models": BASE | {"kernels"},  # a model's MoE shape is the kernel's shape type
    "store": BASE,
    # SuffixDecoding's tree and speculator: shared by the simulator's SUFFIX speculation and the offline replay
    "suffix_decoding": BASE,
    "export": BASE | {"kernels", "models"},
    "runtime": BASE | {"models", "store", "suffix_decoding"},
    "search": BASE | {"kernels", "models", "store", "export", "runtime", "suffix_decoding"},
    "jobs": BASE | {"kernels", "models", "store", "export", "runtime", "search", "suffix_decoding"},
    # offline suffix-decoding replay: hands its best sets to the flag search (its space and coupling rules)
    "suffix": BASE | {"kernels", "models", "store", "export", "runtime", "search", "suffix_decoding"},
    # learning and watching workloads: reads engines' metric names, stores models, queues re-tune jobs
    "workload": BASE | {"kernels", "models", "store", "export", "runtime", "search", "jobs", "suffix_decoding"},
    # `tuner serve`: the web layer over the jobs layer and the store's reads
    "service": BASE | {"kernels", "models", "store", "export", "runtime", "search", "jobs", "suffix_decoding"},
}
TOP = frozenset({"commands", "cli", "__main__"})  # may import anything
# Imports that break a layer rule on purpose, each with why.
EXCEPTIONS: frozenset[tuple[str, str]] = frozenset({
    # `tuner export` rebuilds engine files from stored sweep results; this reader of the kernel store belongs
    # to the export kernel protocol, being reworked with it (issue 10), not moved ahead of it.
    ("tuner.export.from_store", "tuner.store.db"),
    ("tuner.export.from_store", "tuner.store.kernels"),
})


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The tuner modules `name` imports (a name imported from a package counts as its submodule if one)."""
    def known(dotted: str) -> str | None:
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str | None] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {known(a.name) for a in node.names if a.name.split(".")[0] == "tuner"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] == "tuner":
                found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else known(base) for a in node.names}
    return {m for m in found if m and m != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
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
                    work.append((child, iter(sorted(graph[child]))))
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


def _folder(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_no_module_of_tuner_imports_itself_back():
    assert _cycles(_graph()) == []


def test_the_cycle_check_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_folder_imports_a_higher_layer():
    graph = _graph()
    wrong = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items() if _folder(module) not in TOP
        for target in targets
        if _folder(target) != _folder(module) and _folder(target) not in ALLOWED[_folder(module)]
        and (module, target) not in EXCEPTIONS
    )
    assert wrong == []
    assert set(map(_folder, graph)) <= set(ALLOWED) | TOP | {"tuner"}, "a new folder needs its place in ALLOWED"
    stale = {pair for pair in EXCEPTIONS if pair[1] not in graph.get(pair[0], set())}
    assert not stale, f"exceptions no longer needed: {stale}"
