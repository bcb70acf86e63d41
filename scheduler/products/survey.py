"""Surveying a campaign's scenes on the driver: in parallel, each bounded by a timeout.

Surveying a product reads its inputs' headers, RPCs and the DEM around the
footprints (local files, or S3 objects through GDAL's ``/vsis3/``). One
unreachable input must not hold up the others: :func:`survey` runs the
products' planning calls on a pool of daemon threads and reports a call
that raises, or outlives its timeout, as a failure naming the product, its
inputs and the reason, while the others go on. Network reads themselves
are bounded too (:func:`set_network_timeouts` for GDAL; the S3 client's
own timeouts in :mod:`scheduler.products.store`).
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from scheduler.products.product import ProductPlan
from scheduler.runtime.state import Failure

#: Threads surveying scenes at once on the driver (header, RPC and DEM reads: I/O bound).
SURVEY_THREADS = 8
#: Seconds one scene's (or pair's) survey may take before it is reported as timed out.
SURVEY_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class SurveyJob:
    """One product to survey: its label, its inputs (for messages) and the planning call."""

    label: str
    inputs: str
    plan: Callable[[], ProductPlan]


def survey(jobs: Sequence[SurveyJob], threads: int = SURVEY_THREADS,
           timeout_s: float = SURVEY_TIMEOUT_S) -> tuple[list[ProductPlan], list[Failure]]:
    """Run the jobs on up to ``threads`` threads, each bounded by ``timeout_s``.

    A job that raises or outlives its timeout becomes a Failure naming it, its inputs
    and the reason; the others go on. A timed-out job's thread is abandoned (a daemon
    blocked in I/O cannot be interrupted; it ends with the process) and its slot reused.
    Results come back in the jobs' order.
    """
    done: queue.Queue[tuple[int, ProductPlan | None, BaseException | None]] = queue.Queue()
    outcome: dict[int, ProductPlan | Failure] = {}
    waiting = list(range(len(jobs)))
    running: dict[int, float] = {}

    def work(i: int) -> None:
        try:
            done.put((i, jobs[i].plan(), None))
        except Exception as exc:  # noqa: BLE001 - one bad scene must not stop the others
            done.put((i, None, exc))

    def fail(i: int, reason: str) -> Failure:
        return Failure(f"{jobs[i].label}/survey", jobs[i].label, f"{jobs[i].inputs}: {reason}")

    while waiting or running:
        while waiting and len(running) < max(1, threads):
            i = waiting.pop(0)
            running[i] = time.monotonic()
            threading.Thread(target=work, args=(i,), name=f"eochain-survey-{jobs[i].label}",
                             daemon=True).start()
        wait_s = min(t0 + timeout_s for t0 in running.values()) - time.monotonic()
        try:
            i, plan, exc = done.get(timeout=max(0.0, wait_s))
        except queue.Empty:
            now = time.monotonic()
            for j, t0 in list(running.items()):
                if now - t0 >= timeout_s:
                    del running[j]
                    outcome[j] = fail(j, f"survey timed out after {timeout_s:g} s (an input "
                                         "that does not answer?); the other scenes went on")
            continue
        if i not in running:
            continue  # the late answer of a job already reported as timed out
        del running[i]
        outcome[i] = plan if plan is not None else fail(i, f"{type(exc).__name__}: {exc}")
    products = [o for _, o in sorted(outcome.items()) if isinstance(o, ProductPlan)]
    failures = [o for _, o in sorted(outcome.items()) if isinstance(o, Failure)]
    return products, failures


#: GDAL's HTTP bounds (``/vsis3/``, ``/vsicurl/``) unless the user set them: connecting,
#: and a transfer stalled below 1 byte/s for a minute, fail instead of hanging.
GDAL_HTTP_DEFAULTS = {"GDAL_HTTP_CONNECTTIMEOUT": "10", "GDAL_HTTP_LOW_SPEED_TIME": "60",
                      "GDAL_HTTP_LOW_SPEED_LIMIT": "1", "GDAL_HTTP_MAX_RETRY": "3",
                      "GDAL_HTTP_RETRY_DELAY": "1"}


def set_network_timeouts() -> None:
    """Give GDAL's HTTP reads timeouts in this process (and the Ray workers it starts)."""
    for key, value in GDAL_HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
