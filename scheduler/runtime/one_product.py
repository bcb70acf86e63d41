"""One product in this process, into one file: the executor of ``eochain ortho``.

The command line runs a campaign's product (:mod:`scheduler.runtime.products`,
built with ``store=None``), not a product of its own: the same plan task,
the same tile tasks and the same COG layout, tags and metadata, so the file
is the campaign's file byte for byte. Only the executor differs, the way
CARS runs its applications on a sequential cluster:

* tasks run here, in the product's order (plan, then each tile with the
  tile tasks it reads, e.g. its stereo tile), with one
  :class:`~scheduler.runtime.actors.TaskContext` (its dataset cache);
* the write task's tiles are streamed into its COG as they are computed,
  instead of being gathered first as :func:`~scheduler.runtime.dispatch.run_serial`
  gathers a sink's inputs: memory holds the shared plan and one tile, not the
  product;
* the COG goes to a path (atomically: on an error nothing is left there),
  with no STAC item and no manifest record.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from scheduler.runtime.actors import TaskContext
from scheduler.runtime.errors import FlowError
from scheduler.runtime.products import ProductPlan
from scheduler.runtime.state import Task


@dataclass(frozen=True, slots=True)
class OneProductRun:
    """What a one-product run computed besides its tiles: the shared tasks' results by key."""

    path: Path
    shared: dict[str, object]
    tiles: int


def run_to_file(product: ProductPlan, dest: Path,
                progress: Callable[[int], None] | None = None,
                ctx: TaskContext | None = None,
                on_tile: Callable[[NDArray[np.generic]], None] | None = None) -> OneProductRun:
    """Run ``product`` in this process and write its COG at ``dest``.

    ``progress(1)`` is called after each tile, ``on_tile(tile)`` before it is written
    (a command's summary of the product).
    """
    writer = product.tasks[-1]
    cog = product.writer
    ctx = ctx or TaskContext(node_id="local")
    tasks = {t.key: t for t in product.tasks}
    shared: dict[str, object] = {}

    def value(task: Task) -> object:
        return task.fn(ctx, *(shared_value(d) for d in task.deps))

    def shared_value(key: str) -> object:
        if tasks[key].kind != "plan":
            return value(tasks[key])  # a tile's own input (its stereo tile): read once
        if key not in shared:
            shared[key] = value(tasks[key])
        return shared[key]

    def tiles() -> Iterator[NDArray[np.generic]]:
        for key in writer.deps:
            tile = value(tasks[key])
            if not isinstance(tile, np.ndarray):
                raise FlowError(f"{key}: a tile task returned {type(tile).__name__}, "
                                "expected an array")
            if on_tile is not None:
                on_tile(tile)
            yield tile
            if progress is not None:
                progress(1)

    cog.write_file(dest, tiles())
    return OneProductRun(dest, shared, len(writer.deps))
