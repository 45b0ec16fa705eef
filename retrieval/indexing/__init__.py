"""Indexing a folder: scan, change plan, SQLite catalog, embedding stream, FAISS indexes, generations."""
