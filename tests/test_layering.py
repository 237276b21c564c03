"""Import rules from docs/architecture.md: ir and traces use nothing of ours; backends uses ir and
traces; compiler may use all three. Checked on every import statement (lazy ones included).

Our packages install as `ndpc.ir`, `ndpc.traces`, `ndpc.backends`, `ndpc.compiler`; an import that
still names a bare `ir`/`traces`/... would load somebody else's PyPI package, so it is an error too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("ir", "traces", "backends", "compiler")
ALLOWED = {
    "ir": {"ir"},
    "traces": {"traces"},
    "backends": {"backends", "ir", "traces"},
    "compiler": {"compiler", "backends", "ir", "traces"},
}
BARE = "bare"  # an import of `ir`, `traces`, ... without the `ndpc.` prefix


def imported_packages(path: Path) -> list[tuple[int, str]]:
    """(line, package) of every absolute import in `path` that names one of ours: the folder name
    (`ir`, ...) for `ndpc.ir...`, `bare` for an unprefixed `ir...`, `ndpc` for `import ndpc`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            if node.module == "ndpc":  # `from ndpc import ir`
                names = [f"ndpc.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] in PACKAGES:
                found.append((node.lineno, BARE))
            elif parts[0] == "ndpc":
                found.append((node.lineno, parts[1] if len(parts) > 1 else "ndpc"))
    return found


def violations_in(package: str, root: Path = REPO) -> list[str]:
    out = []
    for path in sorted((root / package).rglob("*.py")):
        for line, imported in imported_packages(path):
            if imported not in ALLOWED[package]:
                out.append(f"{path.relative_to(root)}:{line}: {package} imports {imported}")
    return out


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_follow_the_layering(package):
    violations = violations_in(package)
    assert not violations, "\n".join(violations)


def test_tests_and_bench_use_the_installed_names():
    bad = []
    for folder in ("tests", "bench"):
        for path in sorted((REPO / folder).rglob("*.py")):
            bad += [
                f"{path.relative_to(REPO)}:{ln}" for ln, p in imported_packages(path) if p == BARE
            ]
    assert not bad, "imports without the ndpc. prefix:\n" + "\n".join(bad)


def test_the_checker_sees_lazy_imports(tmp_path):
    sample = tmp_path / "x.py"
    sample.write_text(
        "def f():\n    from ndpc.compiler.zoo import ZOO\n    import ndpc.backends.cost\n"
        "    from ndpc import traces\n    import ir.parser\n"
    )
    assert imported_packages(sample) == [(2, "compiler"), (3, "backends"), (4, "traces"), (5, BARE)]


@pytest.mark.parametrize(
    ("package", "line", "reported"),
    [
        ("ir", "from ndpc.backends.cost import CostModel", "backends"),
        ("traces", "import ndpc.ir.ops", "ir"),
        ("backends", "from ndpc.compiler.zoo import ZOO", "compiler"),
        ("backends", "from ndpc import compiler", "compiler"),
        ("ir", "from traces import format", BARE),  # someone else's `traces` package
    ],
)
def test_a_planted_upward_import_fails(tmp_path, package, line, reported):
    """The checker is not vacuous: an upward (or unprefixed) import in a copy of the tree is caught."""
    (tmp_path / package).mkdir()
    (tmp_path / package / "planted.py").write_text(f"def f():\n    {line}\n")
    assert violations_in(package, tmp_path) == [
        f"{package}/planted.py:2: {package} imports {reported}"
    ]


def test_every_package_folder_is_listed_for_the_wheel():
    """pyproject lists every subpackage; an unlisted one would be dropped from the wheel silently."""
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    folders = set()
    for package in PACKAGES:
        for path in (REPO / package).rglob("*"):
            if path.is_dir() and path.name != "__pycache__" and any(path.iterdir()):
                rel = path.relative_to(REPO).parts
                folders.add("ndpc." + ".".join(rel))
        folders.add(f"ndpc.{package}")
    assert folders <= listed, f"missing from pyproject: {sorted(folders - listed)}"
    assert config["package-dir"] == {f"ndpc.{p}": p for p in PACKAGES}
