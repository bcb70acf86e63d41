"""The eochain build that cluster nodes install: a wheel of this checkout plus its pins.

:func:`build_bundle` builds the wheel from a checkout (its ``planner``, ``ops``
and ``scheduler`` packages and ``pyproject.toml``, copied to a scratch folder
first so the shared checkout gets no ``build/`` or ``*.egg-info``) and puts it
beside ``constraints.txt`` in a small folder. The cluster launcher copies that
folder to every node (``file_mounts``); nothing else of the checkout is
synced, so no ``.venv`` or data travels.

:func:`setup_commands` are the node setup the cluster config runs: a Python
>= 3.11 virtual environment (Ubuntu 24.04's ``python3.12``), the wheel with
its ``runtime`` extra under the pinned versions, and Ray at exactly the
client's version. Every path and version pasted into a command is
shell-quoted.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from scheduler.cloud.errors import ClusterConfigError

#: Where the bundle lands on every node, and the environment it is installed into.
REMOTE_DIR = "/tmp/eochain-dist"
VENV = "$HOME/eochain-venv"
PACKAGES = ("planner", "ops", "scheduler")
BUILD_FILES = ("pyproject.toml", "README.md")
WHEEL_BUILD_TIMEOUT_S = 300
_PYTHON = re.compile(r"[A-Za-z0-9_./-]{1,100}")


@dataclass(frozen=True, slots=True)
class Bundle:
    """A local folder holding one eochain wheel and the ``constraints.txt`` it installs under."""

    folder: Path
    wheel_name: str

    def __post_init__(self) -> None:
        if not self.wheel_name.endswith(".whl") or "/" in self.wheel_name:
            raise ClusterConfigError(
                f"bundle wheel {self.wheel_name!r}: expected a wheel file name ending in .whl")

    @property
    def remote_wheel(self) -> str:
        return f"{REMOTE_DIR}/{self.wheel_name}"


def bundle_from_wheel(wheel: Path, constraints: Path, folder: Path) -> Bundle:
    """A bundle in ``folder`` from an already built wheel and its constraints file."""
    for path, what in ((wheel, "wheel"), (constraints, "constraints file")):
        if not path.is_file():
            raise ClusterConfigError(f"{what} {str(path)!r} does not exist or is not a file")
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy2(wheel, folder / wheel.name)
    shutil.copy2(constraints, folder / "constraints.txt")
    return Bundle(folder, wheel.name)


def build_bundle(project_dir: Path, folder: Path) -> Bundle:
    """Build the eochain wheel of the checkout ``project_dir`` into ``folder`` (with its pins)."""
    missing = [n for n in (*PACKAGES, *BUILD_FILES, "constraints.txt")
               if not (project_dir / n).exists()]
    if missing:
        raise ClusterConfigError(
            f"--project-dir {str(project_dir)!r} lacks {', '.join(missing)}: expected an eochain "
            "checkout (the folder holding pyproject.toml)")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.nbi", "*.nbc")
    with tempfile.TemporaryDirectory(prefix="eochain-wheel-") as scratch:
        src = Path(scratch) / "src"
        src.mkdir()
        for name in PACKAGES:
            shutil.copytree(project_dir / name, src / name, ignore=ignore)
        for name in BUILD_FILES:
            shutil.copy2(project_dir / name, src / name)
        out = Path(scratch) / "dist"
        cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(src)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True,
                                  timeout=WHEEL_BUILD_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as exc:
            raise ClusterConfigError(
                f"building the eochain wheel from {str(project_dir)!r} took over "
                f"{WHEEL_BUILD_TIMEOUT_S} s (pip needs setuptools from an index)") from exc
        wheels = sorted(out.glob("eochain-*.whl")) if out.is_dir() else []
        if done.returncode != 0 or len(wheels) != 1:
            raise ClusterConfigError(
                f"building the eochain wheel from {str(project_dir)!r} failed "
                f"(`{shlex.join(cmd)}` exit {done.returncode}): {done.stderr.strip()[-800:]}")
        return bundle_from_wheel(wheels[0], project_dir / "constraints.txt", folder)


def setup_commands(bundle: Bundle, ray_version: str, python: str = "python3.12") -> list[str]:
    """Node setup: a venv of ``python``, the bundle's wheel under its pins, Ray ``ray_version``."""
    if not _PYTHON.fullmatch(python):
        raise ClusterConfigError(
            f"--python {python!r}: expected an interpreter name or path such as python3.12")
    q = shlex.quote
    constraints = f"{REMOTE_DIR}/constraints.txt"
    return [
        # Ubuntu ships python3.12 without its venv module
        "command -v " + q(python) + " >/dev/null || { echo 'eochain: " + python
        + " not found; use an Ubuntu 24.04 AMI or pass --python' >&2; exit 1; }",
        # Ubuntu ships python3.12 without its venv module (ensurepip)
        (f"{q(python)} -c 'import ensurepip' 2>/dev/null || (sudo apt-get -qq update && "
        f"sudo DEBIAN_FRONTEND=noninteractive apt-get -qq install -y {q(python + '-venv')})"),
        f"test -x {VENV}/bin/python || {q(python)} -m venv {VENV}",
        f"{VENV}/bin/pip install -q -c {q(constraints)} {q(bundle.remote_wheel + '[runtime]')} "
        + q(f"ray[default]=={ray_version}"),
        # the same version number may hold another build: always install this one
        f"{VENV}/bin/pip install -q --no-deps --force-reinstall {q(bundle.remote_wheel)}",
        # Ray runs later commands in an interactive login bash: put the venv first on PATH
        (f"grep -q eochain-venv $HOME/.bashrc || sed -i '1i export PATH={VENV}/bin:$PATH' "
        "$HOME/.bashrc"),
    ]
