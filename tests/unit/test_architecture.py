"""The dependency direction holds: scheduler -> planner, scheduler -> ops, never back.

import-linter reads the contracts from pyproject.toml; a second, plain check
walks the source so that a broken linter cannot hide a violation.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "planner": {"ops", "scheduler", "ray", "rasterio", "boto3", "botocore"},
    "ops": {"scheduler", "ray", "boto3", "botocore"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_point_one_way(package: str) -> None:
    offenders = {
        str(path.relative_to(REPO)): sorted(_imports(path) & FORBIDDEN[package])
        for path in sorted((REPO / package).rglob("*.py"))
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"{package} must not import {sorted(FORBIDDEN[package])}: {offenders}"


def test_ops_uses_only_the_tile_model_from_planner() -> None:
    allowed = {"planner", "planner.grid", "planner.errors"}
    offenders: dict[str, list[str]] = {}
    for path in sorted((REPO / "ops").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        bad = [
            node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.split(".")[0] == "planner"
            and node.module not in allowed
        ]
        if bad:
            offenders[str(path.relative_to(REPO))] = bad
    assert not offenders, f"ops may take only {sorted(allowed)} from planner: {offenders}"


def test_import_linter_contracts_hold() -> None:
    linter = Path(sys.executable).with_name("lint-imports")
    if not linter.exists():
        pytest.skip(f"import-linter is not installed beside {sys.executable}")
    result = subprocess.run(
        [str(linter), "--no-cache"], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
