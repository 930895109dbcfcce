"""The import rules of docs/architecture.md, read from the source with ``ast`` (nothing imported).

- No import cycles between bench's modules, and no function-level import that would close one:
  an import tucked inside a function to dodge a cycle means a boundary is wrong.
- ``bench.algorithms`` and ``bench.datasets`` never import ``bench.transfer`` or ``bench.runner``
  (transfer sits above them; the runner hands algorithms their data).
- A function-level ``bench`` import says why it is lazy, in a comment on its line or the line
  above (start-up speed, an optional dependency).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bench"

LOWER_LAYERS = ("bench.algorithms", "bench.datasets")
UPPER_LAYERS = ("bench.transfer", "bench.runner")


@dataclass
class Module:
    name: str
    path: Path
    top: set[str] = field(default_factory=set)  # executed when the module is imported
    lazy: list[tuple[int, str, bool]] = field(default_factory=list)  # (line, target, commented)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _targets(node: ast.Import | ast.ImportFrom, module: Module) -> list[str]:
    """The dotted names an import statement may load (``from a import b``: ``a`` and ``a.b``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module.name.split(".")
        if module.path.name != "__init__.py":
            package = package[:-1]
        package = package[: len(package) - node.level + 1]
        base = ".".join(package + ([base] if base else []))
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _commented(lines: list[str], block: list[ast.stmt]) -> bool:
    """A comment on any line of the import block or on the line just above it."""
    first, last = block[0].lineno, block[-1].end_lineno or block[-1].lineno
    above = lines[first - 2].strip() if first >= 2 else ""
    return above.startswith("#") or any("#" in lines[i - 1] for i in range(first, last + 1))


def _scan(module: Module, lines: list[str], body: list[ast.stmt], in_function: bool) -> None:
    """Record the imports of ``body`` (statements), block by block, then those nested in it."""
    block: list[ast.stmt] = []
    for node in [*body, None]:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            block.append(node)
            continue
        _record(module, lines, block, in_function)
        block = []
        if node is None or _is_type_checking(node):
            continue  # a TYPE_CHECKING block is for annotations only: never executed
        inner = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        nested = [getattr(node, name, None) for name in ("body", "orelse", "finalbody")]
        nested += [handler.body for handler in getattr(node, "handlers", [])]
        for statements in nested:
            if isinstance(statements, list):
                _scan(module, lines, statements, inner)


def _record(module: Module, lines: list[str], block: list[ast.stmt], in_function: bool) -> None:
    for stmt in block:
        for target in _targets(stmt, module):
            if not target.startswith("bench."):
                continue  # not bench's, or ``from bench import x`` (x is the target)
            if in_function:
                module.lazy.append((stmt.lineno, target, _commented(lines, block)))
            else:
                module.top.add(target)


def parse_package(root: Path) -> dict[str, Module]:
    modules = {}
    for path in sorted(root.rglob("*.py")):
        module = Module(module_name(path, root), path)
        source = path.read_text()
        _scan(module, source.splitlines(), ast.parse(source).body, False)
        modules[module.name] = module
    return modules


def _loaded(target: str, importer: str, modules: dict[str, Module]) -> set[str]:
    """The modules importing ``target`` executes: it and its parent packages, except the
    packages ``importer`` itself lives in (they are already being imported)."""
    parts = target.split(".")
    found = {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & set(modules)
    return {m for m in found if not importer.startswith(m + ".")} - {importer}


def import_graph(modules: dict[str, Module], with_lazy: bool = False) -> dict[str, set[str]]:
    """Module -> modules it imports; a package that imports its submodules by discovery
    (``pkgutil.iter_modules``, the registries' packages) imports each of them."""
    graph = {}
    for name, module in modules.items():
        targets = set(module.top) | ({t for _, t, _ in module.lazy} if with_lazy else set())
        edges = set().union(*(_loaded(t, name, modules) for t in targets)) if targets else set()
        if module.path.name == "__init__.py" and "pkgutil.iter_modules" in module.path.read_text():
            edges |= {m for m in modules if m.rpartition(".")[0] == name}
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


@pytest.fixture(scope="module")
def modules() -> dict[str, Module]:
    return parse_package(PACKAGE)


def test_no_import_cycles(modules):
    cycle = find_cycle(import_graph(modules))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_function_level_import_hides_a_cycle(modules):
    cycle = find_cycle(import_graph(modules, with_lazy=True))
    assert cycle is None, "a function-level import closes a cycle: " + " -> ".join(cycle)


def test_algorithms_and_datasets_never_import_transfer_or_the_runner(modules):
    bad = [
        f"{name} imports {target} ({where})"
        for name, module in modules.items()
        if name.startswith(LOWER_LAYERS)
        for where, target in [("module level", t) for t in module.top]
        + [(f"line {line}", t) for line, t, _ in module.lazy]
        if target.startswith(UPPER_LAYERS)
    ]
    assert not bad, "a lower layer imports an upper one:\n" + "\n".join(sorted(bad))


def test_function_level_bench_imports_say_why(modules):
    silent = [
        f"{module.path.relative_to(PACKAGE.parent)}:{line} imports {target}"
        for module in modules.values()
        for line, target, commented in module.lazy
        if not commented
    ]
    assert not silent, (
        "function-level bench imports without a comment giving the reason (start-up speed, "
        "an optional dependency); import at module level instead:\n" + "\n".join(sorted(silent))
    )


# -- the checks themselves catch what they are for --------------------------------------------
def _package(tmp_path: Path, files: dict[str, str]) -> dict[str, Module]:
    root = tmp_path / "bench"
    for rel, text in {"__init__.py": "", **files}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return parse_package(root)


DISCOVERS = "import pkgutil\nfor m in pkgutil.iter_modules(__path__):\n    pass\n"


def test_a_planted_cycle_through_package_discovery_is_found(tmp_path):
    planted = _package(
        tmp_path,
        {
            "datasets/__init__.py": DISCOVERS,  # imports every module of the package
            "datasets/base.py": "",
            "datasets/toy.py": "from bench.datasets.base import X\nfrom bench import runner\n",
            "runner.py": "from bench.datasets.base import X\n",
        },
    )
    assert find_cycle(import_graph(planted)) == [
        "bench.datasets",
        "bench.datasets.toy",
        "bench.runner",
        "bench.datasets",
    ]


def test_a_lazy_import_that_closes_a_cycle_is_found(tmp_path):
    planted = _package(
        tmp_path,
        {
            "spec.py": "from bench import hparams\n",
            "hparams.py": "def space():\n    # lazy: slow\n    from bench import spec\n",
        },
    )
    assert find_cycle(import_graph(planted)) is None
    assert find_cycle(import_graph(planted, with_lazy=True)) == [
        "bench.hparams",
        "bench.spec",
        "bench.hparams",
    ]


def test_type_only_imports_pass_and_silent_lazy_imports_are_told_apart(tmp_path):
    planted = _package(
        tmp_path,
        {
            "a.py": "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from bench import b\n",
            "b.py": "from bench import a\n"
            "def f():\n    # lazy: slow to import\n    from bench import c\n"
            "def g():\n    from bench import c\n",
            "c.py": "",
        },
    )
    assert find_cycle(import_graph(planted, with_lazy=True)) is None
    lazy = [(line, commented) for line, target, commented in planted["bench.b"].lazy]
    assert lazy == [(4, True), (6, False)]
