"""Prometheus file service discovery for running campaigns: eochain keeps the target list.

Every campaign's exporter (:class:`scheduler.observe.metrics.MetricsExporter`)
listens on a port of its own that lives as long as the run. While it runs,
:func:`registered_target` keeps one file_sd JSON file for it in the targets
directory::

    $EOCHAIN_PROMETHEUS_TARGETS  (default /tmp/eochain/prometheus-targets)
      eochain-<host>-<pid>-<port>.json
        [{"targets": ["127.0.0.1:PORT"],
          "labels": {"campaign": NAME, "driver_host": HOST, "driver_pid": PID}}]

``dashboards/prometheus.yml`` reads that directory (``file_sd_configs``),
so Prometheus finds every campaign on the machine without an edit. The file
is written atomically (a temporary name, then a rename: Prometheus never
reads half a file) and removed when the run ends. A driver killed without
cleanup leaves its file: Prometheus then sees the target down and the alert
``EochainDriverGone`` fires (``dashboards/rules/eochain.yml``). Files of
drivers that are gone for more than :data:`STALE_AFTER_S` are swept at the
next registration on the same host. Setting ``EOCHAIN_PROMETHEUS_TARGETS``
to an empty string turns registration off.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

__all__ = ["DEFAULT_TARGETS_DIR", "STALE_AFTER_S", "TARGETS_ENV", "registered_target",
           "sweep_stale", "targets_dir"]

TARGETS_ENV = "EOCHAIN_PROMETHEUS_TARGETS"
DEFAULT_TARGETS_DIR = Path("/tmp/eochain/prometheus-targets")
#: A dead driver's file is kept this long (its alert fires), then swept.
STALE_AFTER_S = 24 * 3600.0
_NAME = re.compile(r"eochain-(?P<host>.+)-(?P<pid>\d+)-(?P<port>\d+)\.json")


def targets_dir(environ: Mapping[str, str] = os.environ) -> Path | None:
    """The file_sd directory: ``$EOCHAIN_PROMETHEUS_TARGETS``, the default, or None (off)."""
    value = environ.get(TARGETS_ENV)
    if value is None:
        return DEFAULT_TARGETS_DIR
    return Path(value) if value.strip() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def sweep_stale(directory: Path, *, host: str, now_s: float | None = None,
                stale_after_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove this host's files whose driver is dead and that are older than ``stale_after_s``."""
    now_s = time.time() if now_s is None else now_s
    removed = []
    for path in directory.glob("eochain-*.json"):
        m = _NAME.fullmatch(path.name)
        if m is None or m["host"] != host or _alive(int(m["pid"])):
            continue
        try:
            if now_s - path.stat().st_mtime > stale_after_s:
                path.unlink()
                removed.append(path)
        except FileNotFoundError:
            continue  # another driver swept it first
    return removed


@contextmanager
def registered_target(campaign: str, host: str, port: int, directory: Path | None = None,
                      warn: Callable[[str], None] | None = None) -> Iterator[Path | None]:
    """Keep a file_sd file naming ``host:port`` for ``campaign`` while the block runs.

    Yields the file's path, or None when registration is off. A directory
    that cannot be written is an ``OSError`` naming it and the variable to
    set; with ``warn``, that message goes to ``warn`` instead and the block
    runs unlisted (a campaign is not stopped for its monitoring).
    """
    directory = targets_dir() if directory is None else directory
    if directory is None:
        yield None
        return
    hostname = re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname()) or "host"
    pid = os.getpid()
    path = directory / f"eochain-{hostname}-{pid}-{port}.json"
    doc = [{"targets": [f"{host}:{port}"],
            "labels": {"campaign": campaign, "driver_host": hostname, "driver_pid": str(pid)}}]
    tmp = path.with_name(path.name + ".tmp")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        sweep_stale(directory, host=hostname)
        tmp.write_text(json.dumps(doc))
        tmp.replace(path)
    except OSError as exc:
        message = (f"cannot write the Prometheus target file {str(path)!r}: {exc}; set "
                   f"{TARGETS_ENV} to a writable folder that prometheus.yml reads (or to '' to "
                   "register nothing)")
        if warn is None:
            raise OSError(message) from exc
        warn(f"metrics: {message}")
        yield None
        return
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)
