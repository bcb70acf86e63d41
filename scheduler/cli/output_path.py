"""Checks of a command's output path, made before any compute.

``eochain ortho``/``dsm -o PATH`` refuse a path that is one of their inputs
(the image, its RPC sidecar, the DEM or geoid: writing there would destroy
the input), an existing file unless ``--overwrite`` is given, a folder, and
a location whose folder is missing or not writable (probed by creating a
hidden file there, which also catches read-only mounts and, unlike
``os.access``, root on a read-only folder). Inputs are checked to exist the
same way: a missing DEM is reported before the image is read.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import click


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def is_local(path: str | Path) -> bool:
    """A path on this machine's file system (not ``/vsis3/...`` nor ``s3://...``)."""
    text = str(path)
    return "://" not in text and not text.startswith("/vsi")


def check_input_exists(path: Path | str | None, option: str) -> None:
    """A local input named by ``option`` exists (a remote one is left to its reader)."""
    if path is not None and is_local(path) and not Path(path).exists():
        raise click.BadParameter(f"{path} does not exist", param_hint=option)


def check_output_file(output: Path, inputs: Iterable[Path | str | None], *,
                      overwrite: bool) -> None:
    """Refuse an output that is an input, exists (without ``overwrite``) or cannot be written."""
    for source in inputs:
        if source is not None and is_local(source) and _same(output, Path(source)):
            raise click.BadParameter(
                f"{output} is an input of this command ({source}); writing there would destroy "
                "it. Choose another output path", param_hint="-o/--output")
    if output.is_dir():
        raise click.BadParameter(f"{output} is a folder; expected the path of the output file",
                                 param_hint="-o/--output")
    if output.exists() and not overwrite:
        raise click.BadParameter(f"{output} already exists; pass --overwrite to replace it",
                                 param_hint="-o/--output")
    folder = output.resolve().parent
    if not folder.is_dir():
        raise click.BadParameter(f"folder {folder} does not exist; create it first",
                                 param_hint="-o/--output")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".eochain-probe-"):
            pass
    except OSError as exc:
        raise click.BadParameter(f"folder {folder} is not writable ({exc.strerror})",
                                 param_hint="-o/--output") from exc
