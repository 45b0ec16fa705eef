"""SQLite catalog of the files of one index generation (`catalog.sqlite`).

One row per file found under the indexed root. `id` is the FAISS id of the file's vector and its row in
`vectors.npy`; ok files hold ids 0..n_ok-1 (in path order), bad files the ids after them. A catalog is
written once, in one transaction, into a generation folder that is not live yet, and only read after
that, so the plain rollback journal is enough (no WAL files beside it to checksum).

A path is stored as TEXT when it is valid UTF-8 and otherwise as a BLOB of its exact bytes (`os.fsencode`,
e.g. a Latin-1 name from an old archive), so every name the file system can hold round-trips exactly;
readers get `str` back either way (surrogate-escaped, as `os.fsdecode` gives it).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from plumbing.filenames import printable
from retrieval.errors import FormatVersionError, IndexError_
from retrieval.records import FileRecord

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE files (
    id           INTEGER PRIMARY KEY,
    path         TEXT NOT NULL UNIQUE,
    size         INTEGER NOT NULL,
    mtime_ns     INTEGER NOT NULL,
    content_hash TEXT,
    width        INTEGER,
    height       INTEGER,
    status       TEXT NOT NULL CHECK (status IN ('ok', 'bad')),
    error        TEXT
);
CREATE INDEX files_content_hash ON files (content_hash);
"""


@dataclass(frozen=True)
class BadFile:
    """A file that could not be decoded (or read); kept so an unchanged bad file is not retried."""

    id: int
    path: str  # relative to the indexed root, POSIX separators
    size: int
    mtime_ns: int
    content_hash: str | None  # None when the bytes could not even be read
    error: str


def _stored_path(path: str) -> str | bytes:
    """How a path is stored: text when it is valid UTF-8, else its exact bytes."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return os.fsencode(path)


def _read_path(value: str | bytes) -> str:
    return os.fsdecode(value) if isinstance(value, bytes) else value


class Catalog:
    """A read or write handle on one `catalog.sqlite`. Use `Catalog.create` or `Catalog.open`."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn

    # ------------------------------------------------------------------------------------ open/close

    @classmethod
    def create(cls, path: Path) -> Catalog:
        """A new, empty catalog at `path` (which must not exist)."""
        path = Path(path)
        if path.exists():
            raise FileExistsError(f"{path}: catalog already exists")
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.executescript(_SCHEMA)
        conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        return cls(path, conn)

    @classmethod
    def open(cls, path: Path) -> Catalog:
        """Open an existing catalog read-only; checks that it is one and that its schema is not newer."""
        path = Path(path)
        if not path.is_file():
            raise IndexError_(f"{path}: catalog missing")
        try:
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise IndexError_(f"{path}: not a readable catalog ({exc})") from exc
        if row is None:
            conn.close()
            raise IndexError_(f"{path}: catalog has no schema version")
        version = int(row[0])
        if version > SCHEMA_VERSION:
            conn.close()
            raise FormatVersionError(
                f"{path}: catalog schema {version} is newer than this program reads ({SCHEMA_VERSION});"
                " upgrade retrieval"
            )
        return cls(path, conn)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------------------------ writing

    def write(
        self,
        records: Sequence[FileRecord],
        bad: Sequence[BadFile] = (),
        meta: Mapping[str, str] | None = None,
    ) -> None:
        """Insert all rows and meta entries in one transaction (all or nothing)."""
        conn = self._conn
        try:
            conn.execute("BEGIN")
            conn.executemany(
                "INSERT INTO files (id, path, size, mtime_ns, content_hash, width, height, status, error)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 'ok', NULL)",
                ((r.id, _stored_path(r.path), r.size, r.mtime_ns, r.content_hash, r.width, r.height) for r in records),
            )
            conn.executemany(
                "INSERT INTO files (id, path, size, mtime_ns, content_hash, width, height, status, error)"
                " VALUES (?, ?, ?, ?, ?, NULL, NULL, 'bad', ?)",
                ((b.id, _stored_path(b.path), b.size, b.mtime_ns, b.content_hash, printable(b.error)) for b in bad),
            )
            conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", sorted((meta or {}).items()))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # sqlite has rolled back itself after some errors (a full disk)
                conn.execute("ROLLBACK")
            raise

    # ------------------------------------------------------------------------------------ reading

    def records(self) -> list[FileRecord]:
        """The ok files, ordered by id."""
        rows = self._query(
            "SELECT id, path, size, mtime_ns, content_hash, width, height FROM files WHERE status = 'ok' ORDER BY id"
        )
        return [FileRecord(row[0], _read_path(row[1]), *row[2:]) for row in rows]

    def bad_files(self) -> list[BadFile]:
        """The files that could not be decoded, ordered by id."""
        rows = self._query(
            "SELECT id, path, size, mtime_ns, content_hash, error FROM files WHERE status = 'bad' ORDER BY id"
        )
        return [BadFile(row[0], _read_path(row[1]), *row[2:]) for row in rows]

    def counts(self) -> tuple[int, int]:
        """(ok, bad)."""
        rows = dict(self._query("SELECT status, COUNT(*) FROM files GROUP BY status"))
        return int(rows.get("ok", 0)), int(rows.get("bad", 0))

    def meta(self) -> dict[str, str]:
        return dict(self._query("SELECT key, value FROM meta"))

    def _query(self, sql: str) -> Iterable[tuple]:
        try:
            return self._conn.execute(sql).fetchall()
        except sqlite3.DatabaseError as exc:
            raise IndexError_(f"{self.path}: catalog damaged ({exc})") from exc
