"""The modules of clipadapt import one another without a circle.

The graph is read from the source with `ast`: an edge goes from a module to each clipadapt module
that one of its module-level imports names (``from . import x`` names the submodule ``x``,
``from .video import VideoError`` the module ``video``). Imports inside a function or method are
deferred until the call, after every module has finished importing, and do not count; nor do
imports under ``if TYPE_CHECKING:``, which never run. A class body or a ``try:`` at module level
runs at import time, so its imports count.
"""

from __future__ import annotations

import ast
from pathlib import Path

import clipadapt

PACKAGE = Path(clipadapt.__file__).parent


def module_names(root: Path) -> dict[str, Path]:
    """{dotted module name: file} for the package in `root` and its subpackages."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def _imports_run_at_import_time(tree: ast.Module):
    pending = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue  # deferred to the call
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            pending.extend(node.orelse)
        else:
            pending.extend(ast.iter_child_nodes(node))


def import_graph(root: Path) -> dict[str, set[str]]:
    """{module: the package's modules its module-level imports name}."""
    modules = module_names(root)
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in _imports_run_at_import_time(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names if alias.name in modules}
                continue
            base = node.module or ""
            if node.level:  # relative: `.` is this package, `..` its parent
                anchor = package.split(".")[: package.count(".") + 2 - node.level]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                targets.add(submodule if submodule in modules else base)
        graph[name] = {target for target in targets if target in modules and target != name}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each circle once, as the path that closes it: ``[a, b, a]`` for a ⇄ b."""
    cycles, seen, done = [], set(), set()

    def visit(module: str, path: list[str]) -> None:
        for target in sorted(graph[module]):
            if target in path:
                cycle = path[path.index(target):] + [target]
                if frozenset(cycle) not in seen:
                    seen.add(frozenset(cycle))
                    cycles.append(cycle)
            elif target not in done:
                visit(target, [*path, target])
        done.add(module)

    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    return cycles


def test_clipadapt_has_no_import_circle():
    cycles = import_cycles(import_graph(PACKAGE))
    assert cycles == [], "import circles: " + "; ".join(" -> ".join(cycle) for cycle in cycles)


def test_the_frame_store_and_the_video_readers_import_one_way():
    graph = import_graph(PACKAGE)
    assert "clipadapt.data.frame_store" in graph["clipadapt.data.video"]
    assert "clipadapt.data.video" not in graph["clipadapt.data.frame_store"]


def test_the_circle_finder_sees_module_level_circles_only(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "from .a import A\n",
        "a.py": "from . import b\nA = 1\n",
        "b.py": "import pkg.sub.c\n",
        "sub/__init__.py": "",
        "sub/c.py": "class C:\n    from ..a import A\n",  # a class body runs at import time
        "d.py": "def later():\n    from . import e\n",  # deferred
        "e.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .d import later\nfrom .d import later\n",
    }
    for name, text in files.items():
        (package / name).write_text(text)
    graph = import_graph(package)
    assert graph["pkg.sub.c"] == {"pkg.a"} and graph["pkg.d"] == set() and graph["pkg.e"] == {"pkg.d"}
    assert import_cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]]
