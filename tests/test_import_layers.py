"""The packages import each other only downward, and no module imports itself back through others.

Layers follow the data flow (prompt → add-on → wire → backend → model → rotations → armature):

    top      demo/            drives everything end to end (the demo, its model card)
             blender_addon/   the add-on: the user's end of the wire
    middle   backend/         the server and the one PoseGPT model definition
             training/        fine-tunes that model (imports backend's model, never the reverse)
    bottom   smpl_rig/        skeleton, rotations, frames, kinematics, bodies, metrics
             posegpt_net/     the wire format and the client

A package may import only the packages ``ALLOWED`` lists for it (its own modules always). Every import
counts, including the lazy ones inside functions: a lazy import hides a dependency from the reader, not
from the graph. The graph is read from the source with ``ast``, so nothing here is imported or run.
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("smpl_rig", "posegpt_net", "backend", "training", "blender_addon", "demo")
ALLOWED = {
    "smpl_rig": set(),
    "posegpt_net": set(),
    "backend": {"smpl_rig", "posegpt_net"},
    "training": {"smpl_rig", "backend"},
    "blender_addon": {"smpl_rig", "posegpt_net"},
    "demo": {"smpl_rig", "posegpt_net", "backend", "training", "blender_addon"},
}
# Cycles tolerated while another change removes them: none left; any cycle fails the test.
BEING_REMOVED: set[frozenset] = set()


def project_modules() -> dict[str, tuple[Path, bool]]:
    """{dotted module name: (file, is a package __init__)} for every module of the six packages."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return modules


def import_graph() -> dict[str, set[str]]:
    """{module: project modules it imports}. ``from pkg import name`` points at ``pkg.name`` when that is a
    module, else at ``pkg``; a submodule's implicit import of its own parent packages is not an edge."""
    modules = project_modules()

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, (path, is_package) in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                submodules = [f"{source}.{a.name}" for a in node.names if f"{source}.{a.name}" in modules]
                targets.update(submodules)
                if len(submodules) < len(node.names):
                    targets.add(source)
        graph[name] = {t for t in map(known, targets)
                       if t and t != name and not name.startswith(t + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
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
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def test_the_graph_sees_every_package_and_known_edges():
    graph = import_graph()
    assert {name.split(".")[0] for name in graph} == set(PACKAGES)
    assert "backend.posegpt.model" in graph["training.train"] | graph["training.model_setup"] | graph["training.collate"]
    assert "smpl_rig.rotations" in graph["backend.posegpt.model"]
    # A lazy import inside a function is an edge too.
    assert "training.model_setup" in graph["training.export"]


def test_no_upward_imports():
    upward = sorted(f"{module} imports {target}" for module, targets in import_graph().items()
                    for target in targets
                    if target.split(".")[0] != module.split(".")[0]
                    and target.split(".")[0] not in ALLOWED[module.split(".")[0]])
    assert not upward, "imports against the layering (see this file's docstring):\n" + "\n".join(upward)


def test_no_import_cycles():
    found = [sorted(c) for c in cycles(import_graph()) if frozenset(c) not in BEING_REMOVED]
    assert not found, f"import cycles: {found}"


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert cycles({"a": {"b"}, "b": set()}) == []
