"""Duplicates: exact and near groups, candidate pairs, verification, safe moves with undo, the HTML report."""
