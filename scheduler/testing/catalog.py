"""A price catalog source for AWS endpoints without the Price List API (moto's server)."""

from __future__ import annotations

from collections.abc import Sequence

from scheduler.cloud.aws_catalog import AwsCatalogSource


class SpotAndTypesOnly(AwsCatalogSource):
    """Refreshes instance types and spot prices; keeps the base catalog's on-demand prices.

    For endpoints without the Price List API (moto's server has none).
    """

    def on_demand_prices_usd_per_h(self, region: str, names: Sequence[str]
                                   ) -> dict[str, float]:
        return {}
