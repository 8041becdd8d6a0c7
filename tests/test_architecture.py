"""The package's shape: bdrun's modules import one way (no circles), stay small enough to read, and the run
asks attacks and defenses what they need instead of switching on their kind.

An import circle works only by accident of import order (one side must import the other inside a function, or
behind ``TYPE_CHECKING``), so it hides which module is below which; the test walks every import the source
names, wherever it sits, with the standard library's ``ast`` rather than by importing anything, so a circle
dodged by a function-level import is still a circle. The kind switches are found with ``ast`` too.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "bdrun"
MAX_LINES = 300


def module_name(path: Path) -> str:
    """``bdrun/x/y.py`` is ``bdrun.x.y``; a package's ``__init__.py`` is the package itself."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported_names(tree: ast.AST, name: str, is_package: bool, modules: set[str]) -> set[str]:
    """The bdrun modules that a module's source imports, anywhere in it: at module level, inside functions and
    under ``if TYPE_CHECKING:`` alike (``ast.walk`` visits every node). ``from bdrun.x import y`` is an import of
    the submodule ``bdrun.x.y`` when there is one, and of ``bdrun.x`` otherwise; relative imports resolve
    against the importing module's package."""
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                found.add(submodule if submodule in modules else source)
    return {target for target in found if target in modules}


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    names = set(modules)
    return {
        name: imported_names(ast.parse(path.read_text(), str(path)), name, path.name == "__init__.py", names)
        for name, path in modules.items()
    }


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module, plus modules that import themselves (Tarjan's
    algorithm, iterative so that a deep graph cannot hit the recursion limit)."""
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
            node, successors = work[-1]
            advanced = False
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph[succ]))))
                    advanced = True
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph[node]:
                    found.append(sorted(component))
    return found


def describe(component: list[str], graph: dict[str, set[str]]) -> str:
    """The component's modules and one concrete loop through them (``a -> b -> a``), which says where to cut
    better than the set alone."""
    members = set(component)
    start = component[0]
    path, seen, node = [start], {start}, start
    loop = ""
    while not loop:
        nxt = sorted(graph[node] & members)
        if start in nxt and (len(path) > 1 or len(component) == 1):
            loop = " -> ".join([*path, start])
            break
        unvisited = [n for n in nxt if n not in seen]
        if not unvisited:
            break
        node = unvisited[0]
        path.append(node)
        seen.add(node)
    return f"{', '.join(component)}" + (f" (e.g. {loop})" if loop else "")


def test_graph_walker_sees_hidden_imports(tmp_path: Path) -> None:
    """The walker counts imports inside functions and behind ``TYPE_CHECKING``, and submodules named by
    ``from``: otherwise the circle test below would pass on exactly the circles it is meant to catch."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from bdrun.a import B\n"
        "def f():\n    import bdrun.c\n"
        "from bdrun.pkg import sub\n"
        "from . import d\n"
    )
    modules = {"bdrun.a", "bdrun.c", "bdrun.d", "bdrun.pkg", "bdrun.pkg.sub", "bdrun.x"}
    found = imported_names(ast.parse(source), "bdrun.x", False, modules)
    assert found == {"bdrun.a", "bdrun.c", "bdrun.pkg.sub", "bdrun.d"}
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d"}, "e": {"a"}}) == [["a", "b", "c"], ["d"]]


def test_no_import_circles() -> None:
    graph = import_graph()
    assert len(graph) > 50, "the walker found too few modules; is PACKAGE right?"
    found = circles(graph)
    assert not found, "import circles in bdrun/:\n" + "\n".join(describe(c, graph) for c in found)


def kind_switches(tree: ast.AST) -> list[int]:
    """Lines that compare some ``.kind`` (``==``, ``!=``, ``in``, ...) or ``match`` on one: a switch on an
    attack's or a defense's kind, where the run should ask the object what it needs instead."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
        elif isinstance(node, ast.Match):
            operands = [node.subject]
        else:
            continue
        if any(isinstance(operand, ast.Attribute) and operand.attr == "kind" for operand in operands):
            lines.append(node.lineno)
    return lines


def test_kind_switch_finder_sees_comparisons() -> None:
    source = "if exp.attack.kind == 'data':\n    pass\nx = a.kind in ('none',)\ny = a.kind\nz = 'model' != b.kind\n"
    assert kind_switches(ast.parse(source)) == [1, 3, 5]


def test_no_kind_switch_in_bdrun() -> None:
    """Issue 27: the run and the stages ask an attack or a defense what it needs (``attack.needs_clean_model``,
    ``defense.changes_weights``, ...) and how to build (``attack.backdoor``, ``defense.build``); a kind
    compared anywhere in bdrun/ is a switch creeping back, so a new kind would have to edit the run."""
    found = [
        f"{path.relative_to(PACKAGE.parent)}:{line}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for line in kind_switches(ast.parse(path.read_text(), str(path)))
    ]
    assert not found, "switches on .kind (ask the attack / defense instead): " + ", ".join(found)


def test_modules_are_small() -> None:
    """No module over ``MAX_LINES`` lines (issue 27's acceptance): a module that grows past it holds more than
    one job, and a newcomer reads it whole to find the one they came for."""
    oversized = sorted(
        f"{path.relative_to(PACKAGE.parent)} ({count} lines)"
        for path in PACKAGE.rglob("*.py")
        if (count := len(path.read_text().splitlines())) > MAX_LINES
    )
    assert not oversized, f"modules over {MAX_LINES} lines (split them by job): {', '.join(oversized)}"
