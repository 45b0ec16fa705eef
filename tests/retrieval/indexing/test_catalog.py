"""The SQLite catalog: round trip, one-transaction writes, version and damage checks."""

from __future__ import annotations

import sqlite3

import pytest

from plumbing.hashing import content_hash
from retrieval.errors import FormatVersionError, IndexError_
from retrieval.indexing.catalog import SCHEMA_VERSION, BadFile, Catalog
from retrieval.records import FileRecord


def _records(n: int) -> list[FileRecord]:
    return [FileRecord(i, f"dir/{i:03d}.jpg", 100 + i, 10**18 + i, f"{i:064x}", 32 + i, 48) for i in range(n)]


def test_round_trip(tmp_path):
    records = _records(5)
    bad = [BadFile(5, "broken.png", 7, 123, None, "truncated file"), BadFile(6, "x.jpg", 0, 9, "ab", "empty file")]
    with Catalog.create(tmp_path / "catalog.sqlite") as cat:
        cat.write(records, bad, meta={"root": "/photos"})
    with Catalog.open(tmp_path / "catalog.sqlite") as cat:
        assert cat.records() == records
        assert cat.bad_files() == bad
        assert cat.counts() == (5, 2)
        assert cat.meta() == {"root": "/photos", "schema_version": str(SCHEMA_VERSION)}


def test_write_is_all_or_nothing(tmp_path):
    records = _records(3)
    dup = [*records, FileRecord(3, records[0].path, 1, 1, "00", 1, 1)]  # path must be unique
    with Catalog.create(tmp_path / "catalog.sqlite") as cat:
        with pytest.raises(sqlite3.IntegrityError):
            cat.write(dup)
        assert cat.records() == []
        cat.write(records)
        assert cat.records() == records


def test_open_is_read_only(tmp_path):
    with Catalog.create(tmp_path / "catalog.sqlite") as cat:
        cat.write(_records(2))
    before = content_hash(tmp_path / "catalog.sqlite")
    with Catalog.open(tmp_path / "catalog.sqlite") as cat:
        cat.records()
        with pytest.raises(sqlite3.OperationalError):
            cat.write(_records(1))
    assert content_hash(tmp_path / "catalog.sqlite") == before


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "catalog.sqlite"
    Catalog.create(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    conn.close()
    with pytest.raises(FormatVersionError, match="newer"):
        Catalog.open(path)


def test_not_a_catalog(tmp_path):
    path = tmp_path / "catalog.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(IndexError_, match="catalog.sqlite"):
        Catalog.open(path)
    with pytest.raises(IndexError_, match="missing"):
        Catalog.open(tmp_path / "nope.sqlite")


def test_create_refuses_existing(tmp_path):
    Catalog.create(tmp_path / "c.sqlite").close()
    with pytest.raises(FileExistsError):
        Catalog.create(tmp_path / "c.sqlite")


def test_content_hash_matches_hashlib(tmp_path):
    import hashlib

    data = bytes(range(256)) * 9000  # > 2 chunks of 1 MiB
    (tmp_path / "f").write_bytes(data)
    assert content_hash(tmp_path / "f") == hashlib.sha256(data).hexdigest()
