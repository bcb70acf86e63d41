"""The runtime: run a campaign's task DAG on Ray, depth-first, losing no tile.

* :mod:`~scheduler.runtime.flow`: the lazy Flow API; :mod:`~scheduler.runtime.driver`: :class:`Driver`;
* :mod:`~scheduler.runtime.products`: per product (ortho per scene, DSM per
  pair) the survey and the tasks, plan -> tiles -> write;
  :mod:`~scheduler.runtime.survey`: products surveyed in parallel threads,
  each bounded by a timeout;
* :mod:`~scheduler.runtime.kernels`: the task functions (plain ops calls);
* :mod:`~scheduler.runtime.state`: the pure dispatch bookkeeping (order,
  bytes bound, release, loss and recomputation);
* :mod:`~scheduler.runtime.dispatch`: the Ray loop and the actor pool
  (:mod:`~scheduler.runtime.actors`: thin actors with caches);
* :mod:`~scheduler.runtime.store`, :mod:`~scheduler.runtime.manifest`,
  :mod:`~scheduler.runtime.stac`: atomic publication (local or S3), the
  manifest that makes runs resumable and verifies what they skip, STAC items
  beside products and the
  campaign's collection; :mod:`~scheduler.runtime.provenance`: what a product
  states (heights' CRS, band units, acquisition, inputs and parameters);
  :mod:`~scheduler.runtime.lease`: product leases and run heartbeats, so
  drivers sharing an output compute each product once;
* :mod:`~scheduler.runtime.cluster`: local multi-node clusters on loopback
  (tests, benchmarks); :mod:`~scheduler.runtime.progress` and
  :mod:`~scheduler.runtime.demo`: what ``eochain run`` and ``make demo`` show.
"""
