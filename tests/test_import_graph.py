"""The import graph of the project's own modules: the library never imports the app layer, and
no two modules import each other, directly or around a circle (function-level imports count:
a circle hidden inside a function is still a circle)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "stages")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node, except those under ``if TYPE_CHECKING:`` (imports for annotations only)."""
    out: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        out.append(node)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Project modules imported at run time anywhere in ``path`` (deepest known module)."""
    out: set[str] = set()
    is_pkg = path.name == "__init__.py"
    for node in runtime_nodes(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor if is_pkg else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def test_library_never_imports_the_app_layer() -> None:
    arrows = sorted(f"{a} -> {b}" for a, deps in graph().items() if a.startswith("pipeline")
                    for b in deps if b.startswith("stages"))
    assert arrows == []


def test_no_import_circles() -> None:
    g = graph()
    # A package's __init__ importing its own submodules is how packages re-export; the
    # submodules importing the package back would be the circle, and that is still caught.
    edges = {a: {b for b in deps if not (a == b.rsplit(".", 1)[0] and
                                         Path(modules()[a]).name == "__init__.py")}
             for a, deps in g.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert cycles == [], "\n".join(" -> ".join(c) for c in cycles)


def test_graph_sees_function_level_imports() -> None:
    g = graph()
    assert "pipeline.store.features" in g["stages.encode"]  # imported inside run()
    assert g["pipeline.config"] == {"pipeline.errors", "pipeline.devices", "pipeline.settings"}
    assert g["pipeline.settings"] == {"pipeline.errors"}


def test_annotation_only_imports_are_not_arrows() -> None:
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import a\n"
                     "else:\n    import b\ndef f():\n    import c\n")
    names = {a.name for n in runtime_nodes(tree) if isinstance(n, ast.Import) for a in n.names}
    assert names == {"b", "c"}


# The app layer's own plumbing: the CLI gathers the stages, the package lists them.
STAGE_GLUE = {"stages", "stages.__main__", "stages.cli", "stages.study_cli", "stages.release_cli",
              "stages.options", "stages.cli_errors"}


def test_stages_import_only_the_library() -> None:
    """A stage module imports pipeline/ only: what two stages share lives in the library."""
    arrows = sorted(f"{a} -> {b}" for a, deps in graph().items()
                    if a.startswith("stages.") and a not in STAGE_GLUE
                    for b in deps if b.startswith("stages"))
    assert arrows == []


# Third-party packages whose import costs seconds or pulls native libraries; `rrl status` and a
# cache hit must not load them (tests/test_cli.py::test_status_stays_light).
HEAVY = frozenset({"torch", "torchvision", "timm", "mujoco", "zarr", "h5py", "hdf5plugin", "dask",
                   "distributed", "matplotlib", "dm_control", "gymnasium", "gymnasium_robotics",
                   "s3fs", "fsspec", "scipy", "safetensors", "imageio", "PIL", "OpenGL",
                   "huggingface_hub", "typer", "robomimic"})


def top_level_imports(path: Path) -> list[str]:
    """Modules imported when ``path`` itself is imported: module level, outside TYPE_CHECKING."""
    out: list[str] = []
    todo: list[ast.AST] = list(ast.parse(path.read_text()).body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            todo.extend(n for n in node.body if isinstance(node, ast.ClassDef))
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            todo.extend(ast.iter_child_nodes(node))
    return out


def heavy_modules() -> set[str]:
    """Project modules whose import loads a HEAVY package (through any chain of module-level
    imports, packages' __init__ included)."""
    mods = modules()
    direct = {name: top_level_imports(path) for name, path in mods.items()}

    def project(target: str) -> list[str]:
        # importing a.b.c runs a/__init__, a/b/__init__ and a/b/c
        parts = target.split(".")
        return [m for m in (".".join(parts[:i]) for i in range(1, len(parts) + 1)) if m in mods]

    heavy: set[str] = set()
    changed = True
    while changed:
        changed = False
        for name, targets in direct.items():
            if name in heavy:
                continue
            if any(t.split(".")[0] in HEAVY or any(p in heavy for p in project(t))
                   for t in targets):
                heavy.add(name)
                changed = True
    return heavy


def test_function_level_imports_are_of_heavy_modules_only() -> None:
    """An import inside a function exists to keep a heavy package out of `rrl status` and cache
    hits; any other import belongs at the top of its module, where a reader looks for it."""
    mods, heavy = modules(), heavy_modules()
    lazy = {name for name, path in mods.items() if "def __getattr__(" in path.read_text()}
    light: list[str] = []
    for path in mods.values():
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    targets = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    # `from package import submodule` imports the submodule; a name a package
                    # gives through its module __getattr__ is lazy on purpose (heavy).
                    if node.module in lazy:
                        continue
                    targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in mods
                               else node.module for a in node.names]
                else:
                    continue
                for t in targets:
                    project = [m for m in (t, t.rpartition(".")[0]) if m in mods]
                    if t.split(".")[0] in HEAVY or (project and project[0] in heavy):
                        continue
                    light.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {t}")
    assert light == [], "light modules imported inside functions (move them to the top):\n" + "\n".join(light)


def test_heavy_modules_are_found_through_chains() -> None:
    heavy = heavy_modules()
    assert "pipeline.store.features" in heavy  # zarr at its top
    assert "pipeline.config" not in heavy and "pipeline.runner" not in heavy
