"""The tree's dependencies point one way, layer by layer::

    planner (pure) ──> planner.geometry ──> planner.errors
    ops ─────────────> planner.geometry                 (nothing else of the planner)
    scheduler.cli ──> scheduler.products ──> runtime | fleet | observe ──> scheduler.cloud
    scheduler.products ──> ops; runtime, fleet, observe and cloud know tasks, not ortho or DSM
    scheduler.testing (test doubles): imported by tests and benchmarks, never by product code

import-linter reads the contracts from pyproject.toml; the plain checks here
walk the source so that a broken linter cannot hide a violation, and keep
what the linter cannot see (it squashes external packages to their top
name): private Ray APIs only in ``scheduler/ray_private.py``, click only in
``scheduler/cli/``, one error root per package.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "planner": {"ops", "scheduler", "ray", "rasterio", "boto3", "botocore"},
    "ops": {"scheduler", "ray", "boto3", "botocore"},
}
#: scheduler's layers, top to bottom; a layer may import only the layers below it
#: (the packages of one layer may import each other)
SCHEDULER_LAYERS = [{"cli"}, {"products"}, {"runtime", "fleet", "observe"}, {"cloud"}]
#: the engine and what serves it: they know tasks, not ortho or DSM
ENGINE = ("runtime", "fleet", "observe", "cloud")
PRIVATE_RAY = ("ray._private", "ray._raylet", "ray.experimental", "ray.autoscaler._private",
               "ray.core.generated")
RAY_SHIM = "scheduler/ray_private.py"
ERROR_ROOTS = {"planner": "planner.errors.PlannerError", "ops": "ops.errors.OpsError",
               "scheduler": "scheduler.errors.SchedulerError"}


def _sources(*packages: str) -> Iterator[Path]:
    for package in packages:
        yield from sorted((REPO / package).rglob("*.py"))


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def _imports(path: Path) -> list[str]:
    """Every module ``path`` imports, anywhere in it (``from P import x`` gives P and P.x)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names.extend(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _offenders(paths: Iterator[Path], bad) -> dict[str, list[str]]:  # type: ignore[no-untyped-def]
    found = {_rel(p): sorted({m for m in _imports(p) if bad(p, m)}) for p in paths}
    return {k: v for k, v in found.items() if v}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_point_one_way(package: str) -> None:
    offenders = _offenders(_sources(package),
                           lambda _, m: m.split(".")[0] in FORBIDDEN[package])
    assert not offenders, f"{package} must not import {sorted(FORBIDDEN[package])}: {offenders}"


def test_ops_uses_only_the_geometry_layer_from_planner() -> None:
    offenders = _offenders(
        _sources("ops"),
        lambda _, m: m.split(".")[0] == "planner" and m != "planner"
        and not (m + ".").startswith("planner.geometry."))
    assert not offenders, f"ops may take only planner.geometry from planner: {offenders}"


def test_geometry_is_the_planners_bottom_layer() -> None:
    offenders = _offenders(
        _sources("planner/geometry"),
        lambda _, m: m.split(".")[0] == "planner" and m not in {"planner", "planner.errors"}
        and not (m + ".").startswith("planner.geometry.")
        and not m.startswith("planner.errors."))
    assert not offenders, f"planner.geometry may import only planner.errors: {offenders}"


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "scheduler" or len(parts) < 2:
        return None
    return next((i for i, layer in enumerate(SCHEDULER_LAYERS) if parts[1] in layer), None)


def test_scheduler_layers_point_down() -> None:
    def bad(path: Path, module: str) -> bool:
        own = _layer(".".join(path.relative_to(REPO).with_suffix("").parts))
        theirs = _layer(module)
        return own is not None and theirs is not None and theirs < own

    offenders = _offenders(_sources("scheduler"), bad)
    assert not offenders, (
        f"scheduler's layers are {SCHEDULER_LAYERS}, top to bottom; these import upwards: "
        f"{offenders}")


def test_the_engine_knows_tasks_not_products() -> None:
    offenders = _offenders(
        _sources(*(f"scheduler/{p}" for p in ENGINE)), lambda _, m: m.split(".")[0] == "ops")
    assert not offenders, f"scheduler's {ENGINE} must not import ops (kernels): {offenders}"


def test_test_doubles_are_not_imported_by_product_code() -> None:
    offenders = _offenders(
        (p for p in _sources("planner", "ops", "scheduler")
         if not _rel(p).startswith("scheduler/testing/")),
        lambda _, m: (m + ".").startswith("scheduler.testing."))
    assert not offenders, f"scheduler.testing is for tests and benchmarks only: {offenders}"


def test_click_lives_in_the_command_line_only() -> None:
    offenders = _offenders(
        (p for p in _sources("planner", "ops", "scheduler")
         if not _rel(p).startswith("scheduler/cli/")),
        lambda _, m: m.split(".")[0] == "click")
    assert not offenders, f"only scheduler/cli/ may import click: {offenders}"


def test_private_ray_apis_only_in_the_shim() -> None:
    def private(text: str) -> bool:
        return any(text == p or text.startswith(p + ".") for p in PRIVATE_RAY)

    offenders: dict[str, list[str]] = {}
    for path in _sources("planner", "ops", "scheduler"):
        if _rel(path) == RAY_SHIM:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        named = [m for m in _imports(path) if private(m)]
        named += [n.value for n in ast.walk(tree)
                  if isinstance(n, ast.Constant) and isinstance(n.value, str)
                  and private(n.value)]
        if named:
            offenders[_rel(path)] = sorted(set(named))
    assert not offenders, f"private Ray APIs belong in {RAY_SHIM}: {offenders}"


def test_errors_are_defined_in_errors_modules() -> None:
    offenders: dict[str, list[str]] = {}
    for path in _sources("planner", "ops", "scheduler"):
        if path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, ast.ClassDef):
                continue
            bases = [ast.unparse(b) for b in node.bases]
            if any(b.startswith("click.") for b in bases):
                continue  # the command line's own click exceptions
            if node.name.endswith("Error") or any(
                    b.endswith(("Error", "Exception", "Failure")) for b in bases):
                offenders.setdefault(_rel(path), []).append(node.name)
    assert not offenders, f"errors belong in the package's errors.py: {offenders}"


@pytest.mark.parametrize("package", sorted(ERROR_ROOTS))
def test_one_error_root_per_package(package: str) -> None:
    root_module, _, root_name = ERROR_ROOTS[package].rpartition(".")
    root = getattr(importlib.import_module(root_module), root_name)
    strays: list[str] = []
    for path in _sources(package):
        if path.name != "errors.py":
            continue
        name = ".".join(path.relative_to(REPO).with_suffix("").parts)
        module = importlib.import_module(name)
        for value in vars(module).values():
            if (isinstance(value, type) and issubclass(value, BaseException)
                    and value.__module__ == name and not issubclass(value, root)):
                strays.append(f"{name}.{value.__name__}")
    assert not strays, f"every error of {package} derives from {ERROR_ROOTS[package]}: {strays}"


def test_import_linter_contracts_hold() -> None:
    linter = Path(sys.executable).with_name("lint-imports")
    if not linter.exists():
        pytest.skip(f"import-linter is not installed beside {sys.executable}")
    result = subprocess.run(
        [str(linter), "--no-cache"], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
