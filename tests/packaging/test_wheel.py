"""The wheel installs everything under `ndpc` and nothing else at the top level, so it can share a
venv with PyPI packages named `traces`, `ir`, `compiler` or `backends` (docs/architecture.md)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def tracked_files() -> list[str]:
    listing = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, check=True, capture_output=True)
    return [name for name in listing.stdout.decode().split("\0") if name]


def build_wheel(out: Path) -> Path:
    """Build from a copy of the tracked sources: setuptools reuses the source tree's `build/`
    folder, where a module renamed since an earlier build would linger and land in the wheel."""
    src = out / "src"
    for name in tracked_files():
        if (REPO / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(src)],
        check=True,
        capture_output=True,
    )
    (wheel,) = out.glob("ndpc-*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


def test_the_wheel_has_one_top_level_package_and_its_data_files(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    dist_info = "-".join(wheel.name.split("-")[:2]) + ".dist-info"
    assert {n.split("/")[0] for n in names} == {"ndpc", dist_info}
    data = {n for n in names if n.endswith((".toml", ".lark"))}
    assert "ndpc/ir/grammar.lark" in data
    assert "ndpc/compiler/zoo_models.toml" in data
    targets = {Path(n).name for n in data if n.startswith("ndpc/backends/targets/")}
    assert targets == {p.name for p in (REPO / "backends" / "targets").glob("*.toml")}
    modules = {n for n in names if n.endswith(".py")}
    on_disk = {
        "ndpc/" + name
        for name in tracked_files()
        if name.endswith(".py") and name.split("/")[0] in ("ir", "compiler", "backends", "traces")
    }
    assert on_disk == modules


@pytest.mark.slow
def test_ndpc_and_pypi_traces_share_a_venv(wheel, tmp_path):
    """`pip install traces` (a time-series library) next to ndpc: both keep working."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "traces", str(wheel)], check=True)
    probe = (
        "from traces import TimeSeries; ts = TimeSeries(); ts[1] = 2; assert ts[1] == 2\n"
        "import ndpc.traces.format, ndpc.backends.target as t\n"
        "assert 'rtx5080-ndp' in t.list_targets()\n"
    )
    subprocess.run(
        [str(py), "-c", probe], check=True, cwd=tmp_path
    )  # not the repo: its folders shadow
    ndpc = venv / "bin" / "ndpc"
    out = subprocess.run(
        [str(ndpc), "target", "list"], check=True, capture_output=True, text=True, cwd=tmp_path
    )
    assert "rtx5080-ndp" in out.stdout
