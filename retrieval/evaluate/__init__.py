"""`retrieval eval`: how well an index retrieves and finds duplicates on the person's own data.

`metrics` holds the figures as free functions; `knn`, `dedup` and `pairs` load an index and compute
them, one frozen config each."""
