"""How spot capacity behaves, as the planner models it.

The Spot Instance Advisor publishes, per instance type and region, a band of
the share ``f`` of instances that spot reclaimed over the trailing month: the
chance that one instance of the pool is reclaimed before it ends. With a
constant hazard ``lambda`` over an instance's life ``L``::

    f = 1 - exp(-lambda * L)      =>      lambda = -ln(1 - f) / L

Batch instances live about a working day, so ``L`` is taken as 24 h (an
assumption, stated in the catalog's ``spot_model`` and overridable there).
Reading ``f`` as a per-instance-*month* rate (``L`` = 730 h) makes the hazard
30x too low for such instances.

Reclaims are correlated within a pool (one type in one availability zone):
when spot takes capacity back it takes a share of the pool at once. A pool
therefore sees reclaim *events* at ``lambda / reclaim_share`` per hour; each
event takes every running instance of the pool with probability
``reclaim_share`` (the marginal hazard per instance stays ``lambda``), and
leaves the pool without capacity for an exponential time of mean
``capacity_outage_mean_s``: replacements launched there wait for it.
Spreading a type over several zones makes its pools independent, at the
price of moving intermediates between zones (see :mod:`planner.overheads`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from planner.errors import CatalogError

#: Hours in the Advisor's trailing month (what the old reading divided by).
ADVISOR_WINDOW_H = 730.0


@dataclass(frozen=True, slots=True)
class SpotModel:
    mean_instance_lifetime_h: float = 24.0
    reclaim_share: float = 0.5
    capacity_outage_mean_s: float = 1800.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mean_instance_lifetime_h)
                and 0 < self.mean_instance_lifetime_h <= ADVISOR_WINDOW_H):
            raise CatalogError(
                f"spot_model.mean_instance_lifetime_h = {self.mean_instance_lifetime_h!r}, "
                f"expected a number in (0, {ADVISOR_WINDOW_H:g}] hours")
        if not (math.isfinite(self.reclaim_share) and 0 < self.reclaim_share <= 1):
            raise CatalogError(f"spot_model.reclaim_share = {self.reclaim_share!r}, "
                               "expected a number in (0, 1]")
        if not (math.isfinite(self.capacity_outage_mean_s) and self.capacity_outage_mean_s >= 0):
            raise CatalogError(f"spot_model.capacity_outage_mean_s = "
                               f"{self.capacity_outage_mean_s!r}, expected a number >= 0")

    def hazard_per_h(self, band_fraction: float) -> float:
        """Per-instance interruption rate for an Advisor share ``band_fraction``."""
        if not 0 <= band_fraction < 1:
            raise CatalogError(f"interruption share {band_fraction!r}, expected 0 <= f < 1")
        return -math.log(1.0 - band_fraction) / self.mean_instance_lifetime_h

    def pool_event_rate_per_h(self, hazard_per_h: float) -> float:
        """Reclaim events per hour in one (type, zone) pool of that hazard."""
        return hazard_per_h / self.reclaim_share


def spot_model_from_dict(doc: Mapping[str, Any] | None, source: str) -> SpotModel:
    if doc is None:
        return SpotModel()
    values: dict[str, float] = {}
    for key in ("mean_instance_lifetime_h", "reclaim_share", "capacity_outage_mean_s"):
        if key in doc:
            v = doc[key]
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise CatalogError(f"{source}: spot_model.{key} = {v!r}, expected a number")
            values[key] = float(v)
    return SpotModel(**values)
