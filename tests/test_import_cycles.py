"""No import cycles among ndpc's modules, and no function-level import hiding one.

The graph has one node per module (`ndpc.ir.ops`, `ndpc.backends.simulator`, ...) and an edge for
every import statement naming another of our modules, at module level or inside a function
(`if TYPE_CHECKING:` blocks are skipped: they never run). A cycle in it is a cycle whether or not
a function-level import currently keeps Python from tripping over it, so the test counts both.

Function-level imports of our modules are allowed only where loading on first use is the point
(`LAZY`, each with its reason); anywhere else an import belongs at the top of the module.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import networkx as nx

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("ir", "traces", "backends", "compiler")

# (importing file, imported module) -> why the import waits until a function runs.
NUMBA = "numba (~0.3 s to import) is needed only for schedules large enough for compiled code"
ONNX = "onnx (~0.7 s to import) is needed only for .onnx inputs, not for zoo names or .ndpir"
LAZY: dict[tuple[str, str], str] = {
    ("backends/simulator/engine.py", "ndpc.backends.simulator.kernels"): NUMBA,
    ("backends/bounds.py", "ndpc.backends.simulator.kernels"): NUMBA,
    ("backends/serving.py", "ndpc.backends.simulator.kernels"): NUMBA,
    ("compiler/commands/trace.py", "ndpc.traces.generate"): (
        "numba (~0.3 s): only `trace gen` needs the generator; `trace --help/stats/...` stay fast"
    ),
    ("compiler/frontend/__init__.py", "ndpc.compiler.frontend.importer"): ONNX,
    ("compiler/commands/import_.py", "ndpc.compiler.frontend.importer"): ONNX,
    ("compiler/commands/model.py", "ndpc.compiler.frontend.model_writer"): (
        "onnx: only `ndpc model write` builds graphs; `model list/show` stay fast"
    ),
}


@dataclass(frozen=True)
class Import:
    path: str  # importing file, relative to the root
    line: int
    module: str  # importing module
    target: str  # imported module
    in_function: bool


def module_name(path: Path, root: Path) -> str:
    """`ndpc.backends.simulator` for backends/simulator/__init__.py, and so on."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(("ndpc", *parts))


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement with whether it sits inside a function (TYPE_CHECKING skipped)."""
    found: list[tuple[ast.Import | ast.ImportFrom, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit(other, in_function)
            elif isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append((child, in_function))
            else:
                inner = in_function or isinstance(
                    child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
                )
                visit(child, inner)

    visit(tree, False)
    return found


def _targets(node: ast.Import | ast.ImportFrom, modules: set[str], package: str) -> list[str]:
    """Our modules `node` imports: `from a.b import c` names module a.b.c if it exists, else a.b."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
        return [n for n in names if n in modules]
    base = node.module or ""
    if node.level:  # relative: resolve against the importing package
        anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join([*anchor, *([base] if base else [])])
    out = []
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        if sub in modules:
            out.append(sub)
        elif base in modules:
            out.append(base)
    return list(dict.fromkeys(out))


def collect_imports(root: Path = REPO, packages: tuple[str, ...] = PACKAGES) -> list[Import]:
    """Every import between our modules under `root`."""
    files = sorted(p for pkg in packages for p in (root / pkg).rglob("*.py"))
    names = {p: module_name(p, root) for p in files}
    modules = set(names.values())
    out = []
    for path, name in names.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node, in_function in _imports(tree):
            for target in _targets(node, modules, package):
                if target != name:
                    rel = str(path.relative_to(root))
                    out.append(Import(rel, node.lineno, name, target, in_function))
    return out


def import_graph(imports: list[Import]) -> nx.DiGraph:
    graph = nx.DiGraph()
    for imp in imports:
        graph.add_edge(imp.module, imp.target)
    return graph


def cycles(imports: list[Import]) -> list[list[str]]:
    """Each elementary cycle once, as a list of modules (sorted for a stable message)."""
    return sorted(sorted(c) for c in nx.simple_cycles(import_graph(imports)))


def describe(cycle: list[str], imports: list[Import]) -> str:
    members = set(cycle)
    sites = [
        f"  {i.path}:{i.line}: {i.module} -> {i.target}{' (in a function)' * i.in_function}"
        for i in imports
        if i.module in members and i.target in members
    ]
    return " <-> ".join(cycle) + "\n" + "\n".join(sites)


def test_no_import_cycles():
    imports = collect_imports()
    found = cycles(imports)
    assert not found, "import cycles:\n" + "\n".join(describe(c, imports) for c in found)


def test_function_level_imports_are_only_the_listed_lazy_loads():
    imports = collect_imports()
    bad = [
        f"{i.path}:{i.line}: imports {i.target} inside a function"
        for i in imports
        if i.in_function and (i.path, i.target) not in LAZY
    ]
    assert not bad, "move these to the top of the module (or list them in LAZY):\n" + "\n".join(bad)


def test_the_lazy_loads_keep_heavy_libraries_out_of_start_up():
    """What LAZY buys: loading these modules (what `ndpc run`, `ndpc trace`, `ndpc model`,
    `ndpc import` load before doing anything) pulls in none of the slow libraries."""
    modules = [
        "ndpc.compiler.frontend",
        "ndpc.backends.simulator",
        "ndpc.compiler.commands.run",
        "ndpc.compiler.commands.trace",
        "ndpc.compiler.commands.model",
        "ndpc.compiler.commands.import_",
    ]
    code = (
        f"import sys\nfor m in {modules!r}: __import__(m)\n"
        "print(sorted(h for h in ('numba', 'onnx', 'onnxruntime', 'matplotlib') if h in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_lazy_list_has_no_stale_entries():
    used = {(i.path, i.target) for i in collect_imports() if i.in_function}
    stale = sorted(set(LAZY) - used)
    assert not stale, f"LAZY lists imports that are gone: {stale}"


# --- the checker itself finds what it must -----------------------------------------------------


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_a_planted_cycle_hidden_in_a_function_is_found(tmp_path):
    _write(
        tmp_path,
        {
            "ir/__init__.py": "",
            "ir/a.py": "from ndpc.ir.b import g\n\ndef f():\n    return g()\n",
            "ir/b.py": "def g():\n    from ndpc.ir import a\n    return a\n",
            "ir/c.py": "from ndpc.ir.a import f\n",
        },
    )
    imports = collect_imports(tmp_path, ("ir",))
    assert cycles(imports) == [["ndpc.ir.a", "ndpc.ir.b"]]
    lazy = [(i.path, i.line, i.target) for i in imports if i.in_function]
    assert lazy == [("ir/b.py", 2, "ndpc.ir.a")]


def test_a_cycle_through_a_package_init_is_found(tmp_path):
    _write(
        tmp_path,
        {
            "backends/__init__.py": "",
            "backends/sim/__init__.py": "from ndpc.backends.sim.metrics import compute\n",
            "backends/sim/metrics.py": "from ndpc.backends.sim import Result\n",
            "backends/sim/engine.py": "from ndpc.backends.sim.metrics import compute\n",
        },
    )
    imports = collect_imports(tmp_path, ("backends",))
    assert cycles(imports) == [["ndpc.backends.sim", "ndpc.backends.sim.metrics"]]


def test_type_checking_imports_are_not_edges(tmp_path):
    _write(
        tmp_path,
        {
            "traces/__init__.py": "",
            "traces/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from ndpc.traces.b import B\nfrom ndpc.traces import c\n",
            "traces/b.py": "from ndpc.traces.a import A\n",
            "traces/c.py": "",
        },
    )
    imports = collect_imports(tmp_path, ("traces",))
    assert cycles(imports) == []
    assert [(i.module, i.target) for i in imports] == [
        ("ndpc.traces.a", "ndpc.traces.c"),
        ("ndpc.traces.b", "ndpc.traces.a"),
    ]


def test_the_old_simulator_cycle_planted_in_a_copy_of_backends_is_found(tmp_path):
    shutil.copytree(
        REPO / "backends", tmp_path / "backends", ignore=shutil.ignore_patterns("__pycache__")
    )
    metrics = tmp_path / "backends" / "simulator" / "metrics.py"
    metrics.write_text(
        metrics.read_text() + "\n\ndef _late():\n    from ndpc.backends.simulator import simulate\n"
    )
    imports = collect_imports(tmp_path, ("backends",))
    assert ["ndpc.backends.simulator", "ndpc.backends.simulator.metrics"] in cycles(imports)
    assert any(i.in_function and i.path == "backends/simulator/metrics.py" for i in imports)
