"""Products (ortho, DSM) as task DAGs, their store, manifest and STAC, and the Flow API that runs them."""
