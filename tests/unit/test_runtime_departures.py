"""Every node departure gets one cause, and only interruptions reach the spot fallback (pure).

One test per cause of :func:`~scheduler.fleet.departures.departure_cause`,
plus the rule order where two could apply, the request counted per pool, and how long
work lost on a node makes it busy.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from scheduler.fleet.departures import (
    UNTYPED,
    DepartureCause,
    LostWork,
    NodeExit,
    departure_cause,
    pool_of,
    requested_per_pool,
)
from scheduler.runtime.errors import GraphError

pytestmark = pytest.mark.unit

#: an idle spot node, the run's request still wanting both nodes of its pool
IDLE_SPOT = NodeExit("n1", "c7g.xlarge", "spot", busy=False, notice=False, draining=False,
                     requested=2, alive_before=2)


def test_a_spot_notice_is_an_interruption_even_when_idle_and_let_go() -> None:
    node = replace(IDLE_SPOT, notice=True, draining=True, requested=0)
    assert departure_cause(node) is DepartureCause.INTERRUPTION


def test_a_busy_spot_node_lost_without_notice_is_an_interruption() -> None:
    assert departure_cause(replace(IDLE_SPOT, busy=True)) is DepartureCause.INTERRUPTION


def test_an_idle_node_leaving_after_the_request_shrank_is_a_scale_down() -> None:
    assert departure_cause(replace(IDLE_SPOT, requested=1)) is DepartureCause.SCALE_DOWN
    # the run withdrew its request at the end: every idle node going is ours
    assert departure_cause(replace(IDLE_SPOT, requested=0)) is DepartureCause.SCALE_DOWN


def test_a_busy_node_is_never_a_scale_down() -> None:
    busy = replace(IDLE_SPOT, busy=True, requested=0)
    assert departure_cause(busy) is DepartureCause.INTERRUPTION
    on_demand = replace(busy, market="on-demand")
    assert departure_cause(on_demand) is DepartureCause.FAILURE


def test_a_drain_without_deadline_is_a_drain() -> None:
    node = replace(IDLE_SPOT, draining=True, busy=True)
    assert departure_cause(node) is DepartureCause.DRAIN


def test_an_on_demand_node_lost_is_a_failure() -> None:
    node = replace(IDLE_SPOT, market="on-demand", busy=True)
    assert departure_cause(node) is DepartureCause.FAILURE


def test_an_idle_node_lost_while_still_requested_is_a_failure() -> None:
    assert departure_cause(IDLE_SPOT) is DepartureCause.FAILURE
    # without a request of the run (no plan) nothing is a scale-down
    assert departure_cause(replace(IDLE_SPOT, requested=None)) is DepartureCause.FAILURE


def test_a_node_exit_refuses_impossible_counts() -> None:
    with pytest.raises(GraphError, match="alive_before = 0"):
        replace(IDLE_SPOT, alive_before=0)
    with pytest.raises(GraphError, match="requested = -1"):
        replace(IDLE_SPOT, requested=-1)


def test_pools_and_requested_nodes_per_pool() -> None:
    assert pool_of(frozenset({"c7g.large:spot", "node:127.0.0.1"})) == ("c7g.large", "spot")
    assert pool_of(frozenset({"node:127.0.0.1", "head"})) == UNTYPED
    bundles = [{"CPU": 4.0, "c7g.xlarge:spot": 1.0}, {"CPU": 4.0, "c7g.xlarge:spot": 1.0},
               {"CPU": 2.0, "m7g.large:on-demand": 1.0}, {"CPU": 1.0}]
    assert requested_per_pool(bundles) == {("c7g.xlarge", "spot"): 2,
                                           ("m7g.large", "on-demand"): 1}


def test_work_lost_on_a_node_that_lives_on_is_forgotten() -> None:
    lost = LostWork(forget_after_s=120.0)
    lost.lost("a", now_s=100.0)
    lost.lost("b", now_s=100.0)
    lost.came_back("a", sent_s=99.0)  # sent before the loss: says nothing of the node since
    assert lost.nodes() == {"a", "b"}
    lost.came_back("a", sent_s=101.0)  # a call sent after the loss came back: "a" works
    assert lost.nodes() == {"b"}
    lost.still_alive({"b"}, now_s=219.0)  # alive, but not yet long enough to tell
    assert lost.nodes() == {"b"}
    lost.still_alive({"a"}, now_s=300.0)  # "b" not seen alive: a node going keeps its mark
    assert lost.nodes() == {"b"}
    lost.still_alive({"b"}, now_s=221.0)
    assert lost.nodes() == set()
