"""Import rules from docs/architecture.md: ir and traces use nothing of ours; backends uses ir and
traces; compiler may use all three. Checked on every import statement (lazy ones included)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OURS = {"ir", "traces", "backends", "compiler"}
ALLOWED = {
    "ir": {"ir"},
    "traces": {"traces"},
    "backends": {"backends", "ir", "traces"},
    "compiler": {"compiler", "backends", "ir", "traces"},
}


def imported_packages(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every absolute import in `path` that names one of ours."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [(node.lineno, n.split(".")[0]) for n in names if n.split(".")[0] in OURS]
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_follow_the_layering(package):
    violations = []
    for path in sorted((REPO / package).rglob("*.py")):
        for line, imported in imported_packages(path):
            if imported not in ALLOWED[package]:
                violations.append(f"{path.relative_to(REPO)}:{line}: {package} imports {imported}")
    assert not violations, "\n".join(violations)


def test_the_checker_sees_lazy_imports(tmp_path):
    sample = tmp_path / "x.py"
    sample.write_text("def f():\n    from compiler.zoo import ZOO\n    import backends.cost\n")
    assert imported_packages(sample) == [(2, "compiler"), (3, "backends")]
