"""The package's shape, checked from its source: layers, cycles, private APIs.

* mpguard's modules form layers (platform -> compat -> signals -> group ->
  start -> pool -> integrations) and import only downwards;
* no import cycle among them, imports inside functions included (imports
  under ``if TYPE_CHECKING:`` are annotations only and never run);
* a private attribute of a stdlib or billiard object (``x._name``) is read
  only in ``mpguard/_compat``, where each touch is checked on every Python
  by ``test_compat.py``.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

import mpguard

PKG = Path(mpguard.__file__).parent

# Lower layers first; a module may import its own layer and those below.
LAYERS = [
    {"mpguard._errors", "mpguard._config", "mpguard._lazy"},
    {"mpguard._platform"},
    {"mpguard._compat"},
    {"mpguard._signals"},
    {"mpguard._group"},
    {"mpguard._start"},
    {"mpguard._pool", "mpguard._subprocess", "mpguard._detach", "mpguard._supervise"},
    {"mpguard.billiard", "mpguard.celery", "mpguard.testing", "mpguard.pytest_plugin"},
    {"mpguard"},
    # The command is a user of the public API, above it.
    {"mpguard._cli", "mpguard.__main__"},
]


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def layer(mod: str) -> int:
    best = None
    for i, names in enumerate(LAYERS):
        for name in names:
            if (mod == name or mod.startswith(name + ".")) and (
                best is None or len(name) > len(best[1])
            ):
                best = (i, name)
    assert best is not None, mod
    return best[0]


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                for sub in ast.walk(child):
                    if hasattr(sub, "lineno"):
                        lines.add(sub.lineno)
    return lines


def imports(mod: str) -> set[str]:
    """mpguard modules *mod* imports at run time (anywhere in the file)."""
    path = MODULES[mod]
    tree = ast.parse(path.read_text())
    skip = _type_checking_lines(tree)
    is_pkg = path.name == "__init__.py"
    base = mod if is_pkg else mod.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = base.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                pkg = ".".join(parts + ([node.module] if node.module else []))
            else:
                pkg = node.module or ""
            names = []
            for a in node.names:
                sub = f"{pkg}.{a.name}"
                names.append(sub if sub in MODULES else pkg)
        else:
            continue
        for name in names:
            # ``import a.b.c`` imports the longest mpguard module it names.
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            # A module's own packages are imported before it: not an edge.
            if name and not (mod + ".").startswith(name + "."):
                out.add(name)
    return out


GRAPH = {mod: imports(mod) for mod in MODULES}


def test_the_layout_reads_like_the_architecture():
    subpackages = sorted(p.name for p in PKG.iterdir() if (p / "__init__.py").exists())
    assert subpackages == [
        "_compat",
        "_group",
        "_platform",
        "_pool",
        "_start",
        "testing",
    ]
    assert not (PKG.parent / "src").exists()


def test_no_import_cycle():
    # Depth-first search for a back edge; report the cycle it closes.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(mod: str) -> list[str] | None:
        state[mod] = 1
        stack.append(mod)
        for dep in sorted(GRAPH[mod]):
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep not in state:
                cycle = visit(dep)
                if cycle:
                    return cycle
        stack.pop()
        state[mod] = 2
        return None

    for mod in sorted(GRAPH):
        if mod not in state:
            cycle = visit(mod)
            assert cycle is None, " -> ".join(cycle)


def test_cycle_check_can_fail():
    # Negative control: the same search over a graph with a cycle.
    global GRAPH
    saved = GRAPH
    GRAPH = {**saved, "mpguard._errors": {"mpguard._config"}}
    GRAPH["mpguard._config"] = {"mpguard._errors"}
    try:
        with pytest.raises(AssertionError, match=r"mpguard\._config"):
            test_no_import_cycle()
    finally:
        GRAPH = saved


def test_imports_go_down_the_layers_only():
    upward = [
        f"{mod} -> {dep}"
        for mod, deps in GRAPH.items()
        for dep in deps
        if layer(dep) > layer(mod)
    ]
    assert not upward, upward


def test_the_core_names_no_integration():
    # _compat is exempt: billiard's private touches live there too.
    core = [
        m
        for m in MODULES
        if layer(m) <= layer("mpguard._pool") and not m.startswith("mpguard._compat")
    ]
    for mod in core:
        text = MODULES[mod].read_text()
        for name in ("billiard", "celery"):
            assert name not in GRAPH[mod], mod
            assert f"import {name}" not in text, mod
            assert f"mpguard.{name}" not in text, mod


# --- private attributes of stdlib and billiard objects -------------------------

# Undocumented helpers with public-looking names, read only through _compat.
UNDOCUMENTED = {
    "close_fds",
    "read_signed",
    "set_spawning_popen",
    "spawnv_passfds",
    "get_preparation_data",
}


def _foreign_sources() -> list[Path]:
    """The stdlib (and billiard) sources mpguard builds on."""
    names = [
        "multiprocessing",
        "concurrent.futures",
        "threading",
        "subprocess",
        "atexit",
        "selectors",
        "billiard",
        "celery",
    ]
    paths: list[Path] = []
    for name in names:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            continue
        origin = Path(spec.origin)
        if origin.name == "__init__.py":
            paths.extend(origin.parent.glob("*.py"))
        elif origin.suffix == ".py":
            paths.append(origin)
    return paths


def _private_names(paths: list[Path]) -> set[str]:
    out: set[str] = set()
    for path in paths:
        try:
            tree = ast.parse(path.read_text())
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            name = None
            if isinstance(node, ast.Attribute):
                name = node.attr
            elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                name = node.name
            elif isinstance(node, ast.Name):
                name = node.id
            if name and name.startswith("_") and not name.startswith("__"):
                out.add(name)
    return out


FOREIGN_PRIVATE = _private_names(_foreign_sources())


def _own_classes(tree: ast.AST) -> dict[str, list[str]]:
    """Class name -> base names, for classes defined in one module."""
    return {
        node.name: [ast.unparse(b) for b in node.bases]
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
    }


# Bases that bring no foreign private attributes with them.
PURE_BASES = {"", "object", "Protocol", "NamedTuple", "Exception", "enum.Enum"}
# Underscore names that are documented public API.
DOCUMENTED = {"_exit", "_asdict", "_replace", "_fields", "_make"}


def private_touches(path: Path) -> list[str]:
    """``x._name`` reads in *path* that may reach a foreign private name."""
    tree = ast.parse(path.read_text())
    classes = _own_classes(tree)
    found = []

    def pure(cls: str, seen: frozenset[str] = frozenset()) -> bool:
        for base in classes.get(cls, []):
            if (
                base in PURE_BASES
                or base.endswith("Error")
                or base.startswith("Generic")
            ):
                continue
            if base in classes and base not in seen and pure(base, seen | {cls}):
                continue
            return False
        return True

    def walk(node: ast.AST, cls: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                walk(child, child.name)
                continue
            if isinstance(child, ast.Attribute):
                name = child.attr
                recv = child.value
                selfish = (
                    isinstance(recv, ast.Name) and recv.id in ("self", "cls")
                ) or (isinstance(recv, ast.Call) and ast.unparse(recv.func) == "super")
                own = selfish and cls is not None and pure(cls)
                via_compat = isinstance(recv, ast.Name) and recv.id == "_compat"
                private = (
                    name.startswith("_")
                    and not name.startswith("__")
                    and name not in DOCUMENTED
                )
                if not via_compat and (
                    (private and name in FOREIGN_PRIVATE and not own)
                    or name in UNDOCUMENTED
                ):
                    found.append(f"{path.name}:{child.lineno}: .{name}")
            walk(child, cls)

    walk(tree, None)
    return found


def test_private_stdlib_attributes_are_read_in_compat_only():
    assert len(FOREIGN_PRIVATE) > 500  # the scan read the stdlib
    outside = [
        touch
        for mod, path in MODULES.items()
        if not mod.startswith("mpguard._compat")
        for touch in private_touches(path)
    ]
    assert not outside, "\n".join(outside)


def test_private_scan_can_fail(tmp_path):
    # Negative control: the touches this restructure moved into _compat
    # are found when written outside it.
    src = tmp_path / "bad.py"
    src.write_text(
        "from multiprocessing import util, forkserver\n"
        "def f(pool, p, proc):\n"
        "    pool._quick_put = None\n"
        "    p._send_signal(9)\n"
        "    util.close_fds(1)\n"
        "    forkserver.read_signed(3)\n"
        "    return proc._popen\n"
        "class P(object):\n"
        "    def g(self):\n"
        "        return self._lock\n"
    )
    found = private_touches(src)
    for name in ("_quick_put", "_send_signal", "close_fds", "read_signed", "_popen"):
        assert any(name in f for f in found), (name, found)
    assert not any("_lock" in f for f in found)  # mpguard's own class


def test_compat_really_touches_what_it_claims():
    # The scan's counterpart: _compat is where the touches are.
    found = [
        t
        for mod, path in MODULES.items()
        if mod.startswith("mpguard._compat")
        for t in private_touches(path)
    ]
    assert any("_quick_put" in t for t in found)
    assert any("_forkserver_pid" in t for t in found)


def test_every_module_is_in_a_layer():
    for mod in MODULES:
        layer(mod)
