"""A spot notice mid-campaign drains one node of the dispatcher: nothing lost, nothing done twice.

A local Ray cluster of two 1-CPU spot nodes runs a campaign of tile -> write
pairs through the real :class:`~scheduler.runtime.dispatch.Dispatcher`. Node
A's :class:`~scheduler.cloud.imds.InterruptionWatcher` polls the project's
IMDSv2 server on 127.0.0.1; after a few tasks the test issues the two-minute
notice there and A's :class:`~scheduler.fleet.drain.RayNodeDrainer` asks the
GCS to drain A. The dispatcher reads the drain at its next re-read of the
cluster. With a margin as long as the notice, nothing running on A can
finish in time, so every task running there is handed back.

Every run of a task writes a marker (key, node, start time). Checked: every
product is committed exactly once and every task ran; after the dispatcher
saw the drain, A started nothing but runs it had handed back (already
queued on its actor before the notice).
"""

from __future__ import annotations

import functools
import os
import time
import uuid
from pathlib import Path

import pytest

from scheduler.cloud.imds import ImdsClient, InterruptionWatcher
from scheduler.fleet.drain import RayNodeDrainer
from scheduler.runtime.actors import TaskContext
from scheduler.runtime.dispatch import Dispatcher, DispatchOptions, Progress
from scheduler.runtime.state import Task, TaskGraph
from scheduler.testing.cluster import LocalCluster, NodeSpec
from scheduler.testing.imds_server import MetadataServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NOTICE_S = 120.0
PAIRS = 24


def _run(marker_dir: str, key: str, ctx: TaskContext, *inputs: int) -> int:
    """Mark this run (key, node, start), then work a little."""
    name = f"{key}__{ctx.node_id}__{time.time():.6f}__{uuid.uuid4().hex[:8]}"
    Path(marker_dir, name).touch()
    time.sleep(0.3)
    return 1 + sum(inputs)


def test_notice_hands_back_and_loses_nothing(tmp_path: Path) -> None:
    markers = tmp_path / "runs"
    markers.mkdir()
    tasks: list[Task] = []
    for i in range(PAIRS):
        tile, write = f"tile{i:02d}", f"write{i:02d}"
        tasks.append(Task(tile, functools.partial(_run, str(markers), tile), out_bytes=64))
        tasks.append(Task(write, functools.partial(_run, str(markers), write), deps=(tile,),
                          kind="write", product=write))
    graph = TaskGraph.build(tasks)
    committed: dict[str, int] = {}

    def commit(key: str, value: object) -> None:
        committed[key] = committed.get(key, 0) + 1

    spot = {"c7g.xlarge:spot": 1.0}
    with LocalCluster([NodeSpec(1, resources=spot), NodeSpec(1, resources=spot)]) as cluster:
        node_a = cluster.nodes[0].node_id
        drainer = RayNodeDrainer(cluster.address, node_a)
        with MetadataServer(instance_id="i-node-a") as imds, \
                InterruptionWatcher(ImdsClient(imds.url), drainer, poll_s=0.2) as watcher:

            def notice_midway(p: Progress) -> None:
                if p.tasks_done >= 6 and imds.requests and not drainer.drained \
                        and watcher.notice is None:
                    imds.issue_interruption(notice_s=NOTICE_S)

            dispatcher = Dispatcher(DispatchOptions(drain_margin_s=NOTICE_S))
            report = dispatcher.run(graph, notice_midway, commit)
            assert watcher.errors == 0, watcher.last_error

    assert report.ok, report.failures
    assert [d.action for d in drainer.drained] == ["terminate"]
    # nothing lost, nothing committed twice
    assert sorted(report.results) == sorted(k for k in graph.tasks if k.startswith("write"))
    assert committed == {k: 1 for k in report.results}
    runs = [name.split("__") for name in os.listdir(markers)]
    assert {key for key, _, _, _ in runs} == set(graph.tasks)
    # the dispatcher saw the drain and handed back what ran on A
    assert [d.node_id for d in dispatcher.drains] == [node_a]
    drain = dispatcher.drains[0]
    assert drain.kept == () and drain.handed_back
    assert 0 < drain.seconds_left <= NOTICE_S
    on_a = [(key, float(t)) for key, node, t, _ in runs if node == node_a]
    assert any(t < drain.seen_at_s for _, t in on_a)  # A worked before the notice
    started_late = {key for key, t in on_a if t >= drain.seen_at_s}
    assert started_late <= set(drain.handed_back), started_late
