"""Searching an index: open it once (searcher), look query images up in it (query)."""
