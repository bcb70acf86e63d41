"""A campaign's groups of three or more views (``products.dsm.views``): parsed, checked, planned
as fused DSMs (stereo and dsm per pair tile, then fusion)."""

from __future__ import annotations

from typing import Any

import pytest

from planner.calibration import load_calibration
from planner.campaign import parse_campaign
from planner.errors import CampaignError
from planner.estimate import campaign_dag

pytestmark = pytest.mark.unit


def _campaign(views: object, pairs: object = ()) -> Any:
    fp = [5.0, 44.0, 5.02, 44.015]
    scenes = [{"id": f"s{k}", "footprint": fp, "rows": 3000, "cols": 3000} for k in range(4)]
    return parse_campaign({
        "name": "views", "inputs": {"scenes": scenes, "pairs": list(pairs)},
        "products": {"dsm": {"gsd_m": 1.0, "views": views}},
        "tiling": {"tile_px": 1024, "margin_px": 32}})


def test_a_group_of_views_is_one_fused_dsm() -> None:
    """
        stereo.plan:G -> stereo:G/s0+s1:r_c -> dsm:G/s0+s1:r_c -+
                      -> stereo:G/s0+s2:r_c -> dsm:G/s0+s2:r_c -+-> fusion:G:r_c -> dsm.write:G
                      -> stereo:G/s1+s2:r_c -> dsm:G/s1+s2:r_c -+
    """
    c = _campaign([["s0", "s1", "s2"]])
    assert c.view_groups == (("s0", "s1", "s2"),)
    g = campaign_dag(c, load_calibration(), ("c7g",))
    assert g.graph["stages"] == ("stereo", "dsm", "fusion")
    fusion = [k for k in g if k.op == "fusion"]
    assert len(fusion) > 1 and all(k.item == "s0+s1+s2" for k in fusion)
    for k in fusion:
        assert sorted(p.item for p in g.predecessors(k) if p.op == "dsm") == [
            "s0+s1+s2/s0+s1", "s0+s1+s2/s0+s2", "s0+s1+s2/s1+s2"]
        assert g.nodes[k]["cost"].cpu_s["c7g"] > 0
    (write,) = [k for k in g if k.op == "dsm.write"]
    assert set(g.predecessors(write)) == set(fusion)


def test_bad_groups_are_refused_by_key() -> None:
    with pytest.raises(CampaignError) as err:
        _campaign([["s0", "s1"], ["s0", "s0", "s1"], ["s0", "s1", "sX"], "s0"])
    text = str(err.value)
    assert "products.dsm.views[0] = " in text and "three or more scene ids" in text
    assert "products.dsm.views[1]" in text and "products.dsm.views[3]" in text
    assert "products.dsm.views[2] names scenes ['sX']" in text
    with pytest.raises(CampaignError, match="needs stereo pairs .* or views"):
        _campaign([])


def test_eochain_run_makes_the_campaigns_view_groups(tmp_path: Any) -> None:
    """The run's flow asks for every group (the plan refuses a run that would drop one)."""
    from scheduler.cli.run import campaign_flow
    from scheduler.products.driver import Driver

    c = parse_campaign({
        "name": "views", "inputs": {"scenes": [
            {"id": f"s{k}", "uri": str(tmp_path / f"s{k}.tif"), "footprint": [5.0, 44.0, 5.02, 44.015],
             "rows": 3000, "cols": 3000} for k in range(3)]},
        "products": {"dsm": {"gsd_m": 1.0, "views": [["s0", "s1", "s2"]]}}})
    flow = campaign_flow(c, tmp_path / "c.yaml", Driver(address="serial"), dem="dem.tif",
                         geoid=None, tile_px=None, dest=str(tmp_path / "out"), placement={})
    assert flow.dsm_step is not None
    assert flow.dsm_step.views == (("s0", "s1", "s2"),) and flow.dsm_step.pairs == ()
