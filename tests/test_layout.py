"""The package's layout keeps its promises (lesson_lib/__init__.py): imports only go down the
layers, no module imports another module's private names, no import cycles, and the package
map names every module."""

import ast
import re
from pathlib import Path

import pytest

import lesson_lib

ROOT = Path(lesson_lib.__file__).resolve().parent

# Layers, lowest first. A module may import from its own layer or any layer below, never above.
LAYERS = [
    {"lesson_lib._validate", "lesson_lib.weights", "lesson_lib.keyed_random"},
    {"lesson_lib.stereo", "lesson_lib.camera", "lesson_lib.pose", "lesson_lib.warping", "lesson_lib.scenes",
     "lesson_lib.losses", "lesson_lib.images", "lesson_lib.matching", "lesson_lib.stereo_opt", "lesson_lib.metrics",
     "lesson_lib.twoview", "lesson_lib.trajectory"},
    {"lesson_lib.data", "lesson_lib.models"},
    {"lesson_lib.training"},
    {"lesson_lib.evaluation"},
    {"lesson_lib.methods"},
    {"lesson_lib.course", "lesson_lib.__main__"},
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


MODULES = _modules()


def _resolve(importer: str, is_package: bool, level: int, module: str | None) -> str:
    if level == 0:
        return module or ""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _imports(name: str, path: Path):
    """(target module, imported names) for every import of a lesson_lib module in ``path``."""
    tree = ast.parse(path.read_text())
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("lesson_lib"):
                    yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(name, is_package, node.level, node.module)
            if not target.startswith("lesson_lib"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in MODULES:  # "from . import losses": the module itself
                    yield sub, [], node.lineno
                else:
                    yield target, [alias.name], node.lineno


def _layer(module: str) -> int:
    for i, layer in enumerate(LAYERS):
        if any(module == top or module.startswith(top + ".") for top in layer):
            return i
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS in tests/test_layout.py")


def test_every_module_has_a_layer():
    for name in MODULES:
        if name != "lesson_lib":
            _layer(name)


def test_imports_only_go_down_the_layers():
    upward = []
    for name, path in MODULES.items():
        if name == "lesson_lib":
            continue
        for target, _, line in _imports(name, path):
            if target != "lesson_lib" and _layer(target) > _layer(name):
                upward.append(f"{path.relative_to(ROOT.parent)}:{line} imports {target}")
    assert not upward, "imports that go up the layers:\n" + "\n".join(upward)


def test_no_module_imports_a_private_name_of_another():
    private = []
    for name, path in MODULES.items():
        for target, names, line in _imports(name, path):
            for n in names:
                if n.startswith("_") and not n.startswith("__"):
                    private.append(f"{path.relative_to(ROOT.parent)}:{line} imports {n} from {target}")
        # module._private attribute access on an imported lesson_lib module
        text = path.read_text()
        aliases = {alias.asname or alias.name.split(".")[-1]
                   for node in ast.walk(ast.parse(text)) if isinstance(node, (ast.Import, ast.ImportFrom))
                   for alias in node.names
                   if (isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("lesson_lib")))
                   or (isinstance(node, ast.Import) and alias.name.startswith("lesson_lib"))}
        for node in ast.walk(ast.parse(text)):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                private.append(f"{path.relative_to(ROOT.parent)}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert not private, "private names used across modules:\n" + "\n".join(private)


def test_no_import_cycles():
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for target, _, _ in _imports(name, path):
            # a package's own __init__ importing its children is how packages are built, not a cycle
            if target in graph and target != name and not (name != "lesson_lib" and target.startswith(name + ".")):
                graph[name].add(target)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_the_package_map_names_every_public_module():
    doc = lesson_lib.__doc__
    top = {name.split(".")[1] for name in MODULES if name.count(".") >= 1}
    missing = [m for m in sorted(top) if not m.startswith("_") and not re.search(rf"\b{m}\b", doc)]
    assert not missing, f"the package docstring's map omits {missing}"
    for package in ("models", "training", "course", "methods", "twoview"):
        sub = {name.split(".")[2] for name in MODULES if name.startswith(f"lesson_lib.{package}.") and name.count(".") == 2}
        sub_doc = (lesson_lib.__doc__ or "") + (__import__(f"lesson_lib.{package}", fromlist=["x"]).__doc__ or "")
        missing = [m for m in sorted(sub) if not m.startswith("_") and not re.search(rf"\b{m}\b", sub_doc)]
        assert not missing, f"lesson_lib.{package}: no map entry for {missing}"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if not n.endswith("__main__")))
def test_every_module_has_a_docstring(name):
    assert ast.get_docstring(ast.parse(MODULES[name].read_text())), f"{name} has no module docstring"
