"""What a campaign costs beyond its workers' compute: the cluster around them.

Counted per simulated run (:mod:`planner.simulator`) from what the run did::

    head      = price(head type, on demand) * makespan
    network   = (NAT gateway + interface endpoints * their zones) * makespan
                + NAT per-GB * setup GB * instances launched
    volumes   = EBS per GiB-month / 730 * GiB per node * (worker node-hours + makespan)
                (worker node-hours include each node's idle timeout before termination)
    requests  = S3 GET * GETs * tasks run / tasks + S3 PUT * PUTs   (:func:`store_requests`)
    storage   = S3 per GB-month / 730 * bytes kept * makespan / 2
    inter_az  = inter-AZ per GB * bytes that tasks read from a node in another zone

The bytes crossing zones are what the run moved: the simulator adds an
edge's bytes each time a task starts on a node in another zone than the node
holding that input (a redone task reads its inputs again). They are 0 for a
single-zone cluster (the default: every node, head included, is pinned to one
subnet by ``eochain cluster-config``). An interface endpoint is billed per
zone it has an interface in (terraform/ puts the three SSM endpoints in the
first private subnet only, the head's: ``interface_endpoint_zones`` 1), and
the head node has a volume too. S3 traffic goes through the free gateway endpoint, so only the nodes'
setup downloads cross the NAT.

S3 requests follow from what the DAG declares it reads from and writes to
the object store (:func:`store_requests`); intermediates travel through
Ray's object store, not S3::

    GETs = sum over raw windows read: 1 (the file's header, opened per task)
               + (rows - 1) / block_rows + 1   (block rows the window spans on
                 average over its offset: GDAL's /vsis3/ merges the adjacent
                 blocks of one block row into one ranged GET; 0 for a header read)
         + per product published: PRODUCT_GETS
    PUTs = per product published: publish(bytes) + PRODUCT_PUTS
    publish(b) = 1 if b < part_bytes else ceil(b / part_bytes) + 2

``publish`` is one upload (boto3's ``upload_file``: multipart beyond a part of
``part_bytes``, the store's 64 MiB, with a create and a complete call), straight
to the product's key: a multipart upload is visible only once complete, so the
store needs no temporary key and server-side copy (``scheduler/products/store.py``;
the copy doubled the PUTs). ``PRODUCT_GETS`` and ``PRODUCT_PUTS`` are a
product's bookkeeping, as counted on an S3 server (``tests/integration/test_runtime_s3.py``):
the lease taken (a read and a conditional write, ``scheduler/products/lease.py``;
its release is a DELETE, free), the manifest record and the STAC item (one
PUT each), the record check before, the stat after, and the STAC item read
into the campaign's collection. The campaign's own requests (listings,
heartbeats and lease renewals, collection publishes) do not grow with its
products and are left out. A task redone after a loss reads its windows
again, so GETs scale with the tasks run. Raw rasters are taken as tiled
(GeoTIFF/COG) with ``raw_block_rows`` rows per block; the DEM is read as one
window of one block row per tile.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from planner.errors import CatalogError

HOURS_PER_MONTH = 730.0


@dataclass(frozen=True, slots=True)
class Overheads:
    head_node_type: str = "m7i.xlarge"
    ebs_gib_per_node: float = 100.0
    ebs_usd_per_gib_month: float = 0.08
    nat_gateway_usd_per_h: float = 0.045
    nat_usd_per_gb: float = 0.045
    setup_gb_through_nat_per_node: float = 1.0
    interface_endpoints: float = 3.0
    interface_endpoint_zones: float = 1.0
    interface_endpoint_usd_per_h: float = 0.01
    s3_put_usd_per_1000: float = 0.005
    s3_get_usd_per_1000: float = 0.0004
    s3_storage_usd_per_gb_month: float = 0.023
    inter_az_usd_per_gb: float = 0.02
    #: Rows of a raw raster's block (a tiled GeoTIFF or COG; GDAL's COG default is 512).
    raw_block_rows: float = 512.0
    #: Multipart threshold and part size of the store's uploads
    #: (``S3_PART_BYTES`` in ``scheduler/products/store.py``; boto3's default is 8 MiB).
    multipart_part_bytes: float = 64.0 * 2**20
    #: Seconds an idle worker is kept before the autoscaler terminates it: eochain's
    #: clusters (``eochain cluster-config --idle-timeout-minutes``, default from here).
    #: The runtime shrinks its request as each stage's work runs out, so only nodes it
    #: let go sit idle; Ray's own default is 5 minutes.
    idle_timeout_s: float = 60.0

    @property
    def ebs_usd_per_node_h(self) -> float:
        return self.ebs_usd_per_gib_month * self.ebs_gib_per_node / HOURS_PER_MONTH

    @property
    def cluster_usd_per_h(self) -> float:
        """What runs for the whole campaign whatever the fleet: NAT and endpoints."""
        return (self.nat_gateway_usd_per_h + self.interface_endpoints
                * self.interface_endpoint_zones * self.interface_endpoint_usd_per_h)


@dataclass(frozen=True, slots=True)
class OverheadCost:
    head_usd: float
    network_usd: float
    volumes_usd: float
    requests_usd: float
    storage_usd: float
    inter_az_usd: float

    def as_dict(self) -> dict[str, float]:
        return {"head": self.head_usd, "network": self.network_usd,
                "volumes": self.volumes_usd, "requests": self.requests_usd,
                "storage": self.storage_usd, "inter_az": self.inter_az_usd}


@dataclass(frozen=True, slots=True)
class DagTraffic:
    """What the DAG moves and stores, summed once from its declarations."""

    edge_bytes: float          # bytes read by tasks from other tasks' outputs
    output_bytes: float        # bytes written by tasks nothing downstream reads (products)
    tasks: int
    output_tasks: int
    #: raw windows read from the object store, rows -> windows (``graph.graph["window_rows"]``)
    window_rows: Mapping[int, int] = field(default_factory=dict)
    #: bytes of each product published (``graph.graph["published_bytes"]``)
    published_bytes: tuple[int, ...] = ()


#: A product's bookkeeping requests beside its COG (module docstring): lease read,
#: record check, stat after publishing, STAC item read into the collection.
PRODUCT_GETS = 4
#: Lease conditional write, record and STAC item published (one PUT each).
PRODUCT_PUTS = 3


@dataclass(frozen=True, slots=True)
class StoreRequests:
    """S3 requests of one pass over the DAG: GETs (reads) and PUT-class requests (writes)."""

    window_gets: float         # raw windows read by tasks (again when a task is redone)
    product_gets: float        # products' bookkeeping
    puts: float


def publish_puts(nbytes: float, part_bytes: float) -> int:
    """PUT-class requests of one upload of ``nbytes`` (module docstring's ``publish``;
    s3transfer goes multipart from the threshold itself: ``size >= multipart_threshold``)."""
    return 1 if nbytes < part_bytes else math.ceil(nbytes / part_bytes) + 2


def store_requests(o: Overheads, traffic: DagTraffic) -> StoreRequests:
    """The S3 requests of the module docstring, from the DAG's declared reads and writes."""
    block = o.raw_block_rows
    window_gets = 0.0
    for rows, windows in traffic.window_rows.items():
        spanned = (rows - 1) / block + 1 if rows > 0 else 0.0
        window_gets += windows * (1 + spanned)
    products = len(traffic.published_bytes)
    puts = sum(publish_puts(b, o.multipart_part_bytes) for b in traffic.published_bytes)
    return StoreRequests(window_gets, products * PRODUCT_GETS, puts + products * PRODUCT_PUTS)


def requests_usd(o: Overheads, traffic: DagTraffic, reread: float = 1.0) -> float:
    """What the S3 requests of :func:`store_requests` cost, windows read ``reread`` times."""
    s3 = store_requests(o, traffic)
    return (o.s3_get_usd_per_1000 * (s3.window_gets * reread + s3.product_gets)
            + o.s3_put_usd_per_1000 * s3.puts) / 1000


def overhead_cost(o: Overheads, traffic: DagTraffic, *, makespan_s: float, node_s: float,
                  instances: int, head_usd_per_h: float, inter_az_bytes: float = 0.0,
                  tasks_run: int | None = None) -> OverheadCost:
    """The items of the module docstring for one run."""
    if inter_az_bytes < 0:
        raise CatalogError(f"inter_az_bytes = {inter_az_bytes}, expected >= 0")
    hours = makespan_s / 3600
    runs = traffic.tasks if tasks_run is None else tasks_run
    reread = runs / traffic.tasks if traffic.tasks else 1.0
    return OverheadCost(
        head_usd=head_usd_per_h * hours,
        network_usd=o.cluster_usd_per_h * hours
        + o.nat_usd_per_gb * o.setup_gb_through_nat_per_node * instances,
        volumes_usd=o.ebs_usd_per_node_h * (node_s / 3600 + hours),
        requests_usd=requests_usd(o, traffic, reread),
        storage_usd=o.s3_storage_usd_per_gb_month / HOURS_PER_MONTH
        * traffic.output_bytes / 1e9 * hours / 2,
        inter_az_usd=o.inter_az_usd_per_gb * inter_az_bytes / 1e9,
    )


def overheads_from_dict(doc: Mapping[str, Any] | None, source: str) -> Overheads:
    if doc is None:
        return Overheads()
    values: dict[str, Any] = {}
    for name in Overheads.__dataclass_fields__:
        if name not in doc:
            continue
        v = doc[name]
        if name == "head_node_type":
            values[name] = str(v)
            continue
        if (not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v)
                or v < 0):
            raise CatalogError(f"{source}: overheads.{name} = {v!r}, "
                               "expected a non-negative number")
        values[name] = float(v)
    return Overheads(**values)
