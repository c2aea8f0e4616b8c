"""The package's layers, read from its source: no import cycle between ferbatch's files, each part imports only
what its row below allows (docs/architecture.md draws the same table), and few modules loose at the top.

Every `import` and `from ... import` counts, absolute or relative, at the top of a file, inside a function or
under `if TYPE_CHECKING:`, and so do the lazy re-exports of `ferbatch`, `ferbatch.models` and `ferbatch.training`
(`lazy_exports(__name__, {module: names})`: the module loads when one of its names is first asked for).
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ferbatch"

FOUNDATION = {"ferbatch", "_lazy", "classes", "errors", "safe"}
DOMAIN = {"config", "models", "reports", "scoring", "training", "labelling"}
# What each part of ferbatch (its first name below ferbatch/) may import. The flows (flows/, installed as
# ferbatch_flows) use the foundation, the domain, runtime and present; only the command line imports them.
MAY_IMPORT = {
    **dict.fromkeys(FOUNDATION, FOUNDATION),
    **dict.fromkeys(DOMAIN, FOUNDATION | DOMAIN),
    "runtime": FOUNDATION | DOMAIN | {"runtime"},
    "present": FOUNDATION | DOMAIN | {"present"},
    "analysis": FOUNDATION | DOMAIN | {"runtime"},
    "cli": FOUNDATION | DOMAIN | {"runtime", "present", "analysis", "cli", "ferbatch_flows"},
    "__main__": {"cli"},
    "ferbatch": FOUNDATION | {"analysis"},  # __init__.py: `ferbatch.analyze` and friends, loaded on first use
}
MAX_LOOSE_MODULES = 6  # besides __init__.py and __main__.py


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


FILES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imported_names(source: str, name: str, is_package: bool) -> set[str]:
    """Every module name the file of module `name` imports (`from X import y`: X.y when that is a module, else X)."""
    package = name.split(".") if is_package else name.split(".")[:-1]
    tree = ast.parse(source)
    lazy_maps = {target.id: node.value for node in tree.body if isinstance(node, ast.Assign)
                 for target in node.targets if isinstance(target, ast.Name) and isinstance(node.value, ast.Dict)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package[: len(package) - node.level + 1], *([base] if base else [])])
            found.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in FILES else base for alias in node.names)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "lazy_exports":
            modules = node.args[1]
            modules = lazy_maps.get(modules.id, modules) if isinstance(modules, ast.Name) else modules
            found.update(f"{name}.{key.value}" for key in modules.keys)
    found.discard(name)
    return found


def _imports_of(path: Path) -> set[str]:
    return _imported_names(path.read_text(), _module_name(path), path.name == "__init__.py")


def _file_graph() -> dict[str, set[str]]:
    """Module -> the ferbatch modules (files) it imports."""
    graph = {}
    for name, path in FILES.items():
        targets = set()
        for imported in _imports_of(path):
            while imported and imported not in FILES:  # `import ferbatch.a.b` of a name inside a module
                imported = imported.rpartition(".")[0]
            if imported.startswith("ferbatch"):
                targets.add(imported)
        graph[name] = targets - {name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the modules around it (the first one again at the end), or None."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        path.append(node)
        for target in sorted(graph[node]):
            if target in path:
                return [*path[path.index(target):], target]
            if target not in done and (found := visit(target)):
                return found
        path.pop()
        done.add(node)
        return None

    for node in sorted(graph):
        if node not in done and (found := visit(node)):
            return found
    return None


def _part(module: str) -> str:
    """The part of ferbatch a module belongs to: its first name below ferbatch/ ('ferbatch' for __init__)."""
    parts = module.split(".")
    return parts[1] if parts[0] == "ferbatch" and len(parts) > 1 else parts[0]


def test_the_reader_sees_relative_function_level_and_lazy_imports():
    source = ("from . import _store\n"
              "def f():\n    from ..errors import FerbatchError\n    import ferbatch.safe.text\n"
              "_LAZY = {'_read': ('read_rows',)}\n__getattr__, __dir__ = lazy_exports(__name__, _LAZY)\n")
    assert _imported_names(source, "ferbatch.reports", is_package=True) == {
        "ferbatch.reports._store", "ferbatch.errors", "ferbatch.safe.text", "ferbatch.reports._read"}
    assert _imported_names("from ._read import read_rows\n", "ferbatch.reports._store", False) == {
        "ferbatch.reports._read"}
    graph = _file_graph()
    assert "ferbatch.runtime.quiet" in graph["ferbatch.analysis"]  # imported inside a method
    assert "ferbatch.analysis" in graph["ferbatch"]  # a lazy re-export


def test_the_cycle_finder_finds_cycles_and_only_cycles():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
    assert _cycle({"a": {"a"}}) == ["a", "a"]


def test_no_import_cycle_between_ferbatchs_files():
    cycle = _cycle(_file_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_each_part_imports_only_what_its_layer_allows():
    wrong = []
    for module, path in FILES.items():
        allowed = MAY_IMPORT[_part(module)]
        for imported in _imports_of(path):
            root = imported.split(".")[0]
            target = _part(imported) if root == "ferbatch" else root
            if root in ("ferbatch", "ferbatch_flows") and target not in allowed:
                wrong.append(f"{path.relative_to(ROOT)} imports {imported}")
    assert not wrong, "\n".join(wrong)


def test_the_flows_use_the_library_and_never_the_command_line():
    allowed = FOUNDATION | DOMAIN | {"runtime", "present"}
    for path in sorted((ROOT / "flows").glob("*.py")):
        imported = _imported_names(path.read_text(), f"ferbatch_flows.{path.stem}", path.name == "__init__.py")
        wrong = {name for name in imported if name.split(".")[0] == "ferbatch" and _part(name) not in allowed}
        assert not wrong, f"flows/{path.name} imports {wrong}"


def test_few_modules_sit_loose_at_the_top_and_every_package_installs():
    loose = sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert len(loose) <= MAX_LOOSE_MODULES, loose
    packages = {_module_name(path) for path in PACKAGE.rglob("__init__.py")}
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    assert packages <= listed, f"not in pyproject.toml's packages (an install would lack them): {packages - listed}"
    assert {_part(p) for p in packages} <= set(MAY_IMPORT)  # a new package gets its row in MAY_IMPORT
