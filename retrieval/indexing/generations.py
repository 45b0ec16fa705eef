"""Index generations on disk: write one aside, swap it in atomically, load and verify the current one.

Layout of one index folder (`indexes/NAME/`):

    CURRENT              one line naming the live generation, e.g. "gen-0003"
    gen-0003/
      catalog.sqlite     one row per file (retrieval.indexing.catalog); ok ids are 0..n_ok-1
      vectors.npy        float32 (n_ok, dim), row i is the L2-normalised embedding of id i
      index.faiss        FAISS index over vectors.npy; FAISS id i == catalog id i == row i
      manifest.json      format version, root, encoder, index kind + params, recall@10, counts, sha256s of the
                         other files, and `manifest_sha256`: the sha256 of its own other fields
    work/                resume cache of an index run in progress (retrieval.indexing.resume_cache), else absent
    .lock                held (flock) by the one run allowed to write here

A new generation is written to a fresh `gen-NNNN/` folder, every file fsynced, then the folder, then
`CURRENT` is replaced atomically (`plumbing.atomic.atomic_write_bytes`: a temp file, fsync, `os.replace`, fsync
the folder). A SIGKILL at any moment leaves `CURRENT` naming either the old or the new generation, both
complete; generations that are not current are removed after the swap (or by the next run). Readers
verify the sha256 of every file against the manifest before handing anything to `faiss.read_index`, so a
damaged file is reported, never a crash. The manifest carries its own checksum (`manifest_sha256`, over
its other fields as canonical JSON), so an edited root or kind is reported too; a manifest written before
that field existed is read without it. Every size it gives is bounded (`MAX_FILES`, `MAX_INDEX_PARAM`,
`moco.export.MAX_EMBED_DIM`), so an edited count is one error line, never a huge allocation.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import faiss
import numpy as np

from moco.export import MAX_EMBED_DIM
from plumbing.atomic import atomic_write_bytes, fsync_dir
from plumbing.filenames import printable
from plumbing.hashing import content_hash
from retrieval.errors import FormatVersionError, IndexError_, InputError
from retrieval.indexing.catalog import BadFile, Catalog
from retrieval.indexing.faiss_index import KINDS, BuiltIndex, apply_search_params
from retrieval.records import FileRecord

logger = logging.getLogger(__name__)
FORMAT_VERSION = 1

CURRENT = "CURRENT"
CATALOG = "catalog.sqlite"
VECTORS = "vectors.npy"
INDEX = "index.faiss"
MANIFEST = "manifest.json"
WORK = "work"
LOCK = ".lock"
CHECKSUMMED = (CATALOG, VECTORS, INDEX)
SELF_CHECKSUM = "manifest_sha256"  # the manifest's checksum of its own other fields
MAX_FILES = 2**31 - 1  # files an index may count (ok or bad): the catalog's and FAISS's ids stay in int32
MAX_INDEX_PARAM = 1 << 20  # any index parameter (efSearch, nprobe, nlist, rerank, ...): tuned ones stay <= 65536
INDEX_KINDS = tuple(k for k in KINDS if k != "auto")  # what a manifest may name
_GENERATION_RE = re.compile(r"^gen-(\d{4,})$")


# ============================================================================================ manifest


@dataclass(frozen=True)
class Manifest:
    """`manifest.json` of one generation."""

    generation: str
    root: str
    encoder_sha256: str
    encoder_path: str
    dim: int
    kind: str
    params: Mapping[str, int]
    recall_at_10: float | None
    n_ok: int
    n_bad: int
    checksums: Mapping[str, str]
    created: str
    format_version: int = FORMAT_VERSION

    def to_json(self) -> dict:
        return {
            "format_version": self.format_version,
            "generation": self.generation,
            "created": self.created,
            "root": self.root,
            "encoder": {"sha256": self.encoder_sha256, "path": self.encoder_path},
            "dim": self.dim,
            "index": {"kind": self.kind, "metric": "inner_product", "params": dict(self.params)},
            "recall_at_10": self.recall_at_10,
            "counts": {"ok": self.n_ok, "bad": self.n_bad},
            "checksums": {name: {"sha256": digest} for name, digest in self.checksums.items()},
        }

    def to_text(self) -> str:
        """The file's text: `to_json` plus its own checksum."""
        body = self.to_json()
        return json.dumps({**body, SELF_CHECKSUM: _self_checksum(body)}, indent=2) + "\n"

    @classmethod
    def from_json(cls, data: object, path: Path) -> Manifest:
        if not isinstance(data, dict):
            raise IndexError_(f"{path}: damaged manifest (not a JSON object)")
        version = data.get("format_version")
        if not isinstance(version, int):
            raise IndexError_(f"{path}: damaged manifest (no format_version)")
        if version > FORMAT_VERSION:
            raise FormatVersionError(
                f"{path}: index format {version} is newer than this program reads ({FORMAT_VERSION});"
                " upgrade retrieval or rebuild the index"
            )
        if SELF_CHECKSUM in data:  # absent from manifests written before it existed: those are read as before
            body = {k: v for k, v in data.items() if k != SELF_CHECKSUM}
            if data[SELF_CHECKSUM] != _self_checksum(body):
                raise IndexError_(f"{path}: manifest checksum mismatch (edited or damaged since it was written)")
        try:
            manifest = cls(
                generation=str(data["generation"]),
                root=str(data["root"]),
                encoder_sha256=str(data["encoder"]["sha256"]),
                encoder_path=str(data["encoder"]["path"]),
                dim=int(data["dim"]),
                kind=str(data["index"]["kind"]),
                params={str(k): int(v) for k, v in data["index"]["params"].items()},
                recall_at_10=None if data["recall_at_10"] is None else float(data["recall_at_10"]),
                n_ok=int(data["counts"]["ok"]),
                n_bad=int(data["counts"]["bad"]),
                checksums={str(k): str(v["sha256"]) for k, v in data["checksums"].items()},
                created=str(data["created"]),
                format_version=version,
            )
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise IndexError_(f"{path}: damaged manifest ({type(exc).__name__}: {exc})") from exc
        manifest.check_bounds(path)
        return manifest

    def check_bounds(self, path: Path) -> None:
        """IndexError_ naming the first field outside its range: the one bounds check of the sizes a manifest gives."""
        sizes = {"dim": (self.dim, 1, MAX_EMBED_DIM), "counts.ok": (self.n_ok, 0, MAX_FILES)}
        sizes |= {"counts.bad": (self.n_bad, 0, MAX_FILES)}
        sizes |= {f"index.params.{k}": (v, 0, MAX_INDEX_PARAM) for k, v in self.params.items()}
        for name, (value, low, high) in sizes.items():
            if not low <= value <= high:
                raise IndexError_(f"{path}: damaged manifest ({name} {value} is outside {low}..{high})")
        if self.kind not in INDEX_KINDS:
            raise IndexError_(f"{path}: damaged manifest (index kind {self.kind!r}; known: {', '.join(INDEX_KINDS)})")


def _self_checksum(body: Mapping[str, object]) -> str:
    """sha256 of the manifest's fields (all but SELF_CHECKSUM) as canonical JSON: key order and spacing do not count."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


# ============================================================================================ writing


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_fsync_dir = fsync_dir  # one implementation: plumbing.atomic


@contextlib.contextmanager
def write_lock(index_dir: Path) -> Iterator[None]:
    """Hold the index folder's lock for the duration; a second writer gets an InputError at once.

    The lock is an flock on `.lock`, which the kernel releases when its holder exits, however it exits: a
    `.lock` file left by a killed run never blocks the next one. The holder removes the file when it is done,
    whether the run succeeded or failed, and a folder this call created is removed again when the run left
    nothing in it; a taker checks that the file it locked is still the one at `.lock` (not one removed
    meanwhile), so two writers never hold two files."""
    index_dir = Path(index_dir)
    created = not index_dir.exists()
    try:
        index_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{index_dir}: cannot create the index folder here ({exc.strerror or exc})") from None
    try:
        f = _take_lock(index_dir / LOCK)
    except BaseException:
        _remove_if_empty(index_dir, created)
        raise
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(index_dir / LOCK)  # still held: a waiting taker sees the file gone and opens a new one
        f.close()  # releases the flock
        _remove_if_empty(index_dir, created)


def _take_lock(path: Path) -> IO[bytes]:
    """The open, flocked `.lock` file; InputError when another live process holds it."""
    for _ in range(100):  # each retry means a holder removed the file between our open and our flock
        try:
            path.parent.mkdir(parents=True, exist_ok=True)  # again: a failed first run may just have removed it
            f = open(path, "a+b")
        except OSError as exc:
            raise InputError(f"{path.parent}: cannot create the index folder here ({exc.strerror or exc})") from None
        try:
            import fcntl
        except ImportError:  # no flock (Windows): single-writer is then the user's responsibility
            return f
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise InputError(f"{path.parent}: another `retrieval index` run is writing this index") from None
        except BaseException:
            f.close()
            raise
        try:
            if os.stat(path).st_ino == os.fstat(f.fileno()).st_ino:
                return f
        except FileNotFoundError:
            pass
        f.close()
    raise InputError(f"{path.parent}: could not take the index lock (other runs keep replacing {LOCK})")


def _remove_if_empty(index_dir: Path, created: bool) -> None:
    if created:
        with contextlib.suppress(OSError):
            index_dir.rmdir()  # only when empty: a failed first run leaves no folder behind


def write_generation(
    index_dir: Path,
    *,
    root: Path,
    encoder_sha256: str,
    encoder_path: str,
    records: Sequence[FileRecord],
    bad: Sequence[BadFile],
    vectors: np.ndarray,
    built: BuiltIndex,
) -> Manifest:
    """Write a complete new generation aside, make it current atomically, then remove older ones."""
    n = len(records)
    if vectors.ndim != 2 or vectors.shape[0] != n:
        raise ValueError(f"vectors shape {vectors.shape} does not match {n} records")
    if any(r.id != i for i, r in enumerate(records)):
        raise ValueError("ok records must have ids 0..n-1 in order")
    if built.index.ntotal != n:
        raise ValueError(f"index holds {built.index.ntotal} vectors, catalog {n}")
    index_dir = Path(index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    name = _next_generation(index_dir)
    gen = index_dir / name
    gen.mkdir()
    created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")

    with Catalog.create(gen / CATALOG) as catalog:
        catalog.write(
            records,
            bad,
            meta={
                "root": str(root),
                "encoder_sha256": encoder_sha256,
                "generation": name,
                "created": created,
            },
        )
    _fsync_file(gen / CATALOG)

    with open(gen / VECTORS, "wb") as f:
        np.save(f, np.ascontiguousarray(vectors, dtype=np.float32), allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())

    faiss.write_index(built.index, str(gen / INDEX))
    _fsync_file(gen / INDEX)

    manifest = Manifest(
        generation=name,
        root=str(root),
        encoder_sha256=encoder_sha256,
        encoder_path=encoder_path,
        dim=int(vectors.shape[1]),
        kind=built.kind,
        params=dict(built.params),
        recall_at_10=built.recall_at_10,
        n_ok=n,
        n_bad=len(bad),
        checksums={file: content_hash(gen / file) for file in CHECKSUMMED},
        created=created,
    )
    with open(gen / MANIFEST, "w", encoding="utf-8") as f:
        f.write(manifest.to_text())
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(gen)
    _fsync_dir(index_dir)

    _point_current(index_dir, name)
    logger.info("index generation %s is live (%d ok, %d bad, %s)", name, n, len(bad), built.kind)
    remove_stale_generations(index_dir)
    return manifest


def _point_current(index_dir: Path, name: str) -> None:
    atomic_write_bytes(index_dir / CURRENT, lambda f: f.write(f"{name}\n".encode()))


def _generations(index_dir: Path) -> list[tuple[int, str]]:
    found = []
    if index_dir.is_dir():
        for entry in index_dir.iterdir():
            m = _GENERATION_RE.match(entry.name)
            if m and entry.is_dir():
                found.append((int(m.group(1)), entry.name))
    return sorted(found)


def _next_generation(index_dir: Path) -> str:
    gens = _generations(index_dir)
    number = gens[-1][0] + 1 if gens else 1
    return f"gen-{number:04d}"


def remove_stale_generations(index_dir: Path) -> None:
    """Delete every generation folder that `CURRENT` does not name (left by crashes or older runs)."""
    index_dir = Path(index_dir)
    try:
        live = current_generation(index_dir)
    except IndexError_:
        return  # never delete anything when we cannot tell what is live
    if live is None:
        return
    for _, name in _generations(index_dir):
        if name != live:
            shutil.rmtree(index_dir / name, ignore_errors=True)
            logger.debug("removed stale generation %s", name)
    (index_dir / (CURRENT + ".tmp")).unlink(missing_ok=True)


# ============================================================================================ reading


@dataclass(frozen=True)
class Generation:
    """One loaded, verified generation."""

    path: Path
    manifest: Manifest
    records: list[FileRecord]  # ok files, records[i].id == i
    bad: list[BadFile]
    vectors: np.ndarray  # (n_ok, dim) float32, memory-mapped read-only
    index: faiss.Index | None


def current_generation(index_dir: Path) -> str | None:
    """The name in `CURRENT`, or None when the folder holds no index yet."""
    pointer = Path(index_dir) / CURRENT
    try:
        name = pointer.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise IndexError_(f"{pointer}: unreadable ({exc})") from exc
    if not _GENERATION_RE.match(name):
        raise IndexError_(f"{pointer}: damaged (names {name!r}, not a generation folder)")
    return name


def _require_current(index_dir: Path) -> str:
    name = current_generation(index_dir)
    if name is None:
        if not Path(index_dir).exists():
            raise IndexError_(f"{index_dir}: no such index; build it with `retrieval index`")
        raise IndexError_(f"{index_dir}: no index here (no {CURRENT} file); build it with `retrieval index`")
    return name


def read_manifest(index_dir: Path) -> Manifest:
    """The live generation's manifest (no checksums verified: cheap, for `info`)."""
    index_dir = Path(index_dir)
    name = _require_current(index_dir)
    return _read_manifest_file(index_dir / name / MANIFEST)


def _read_manifest_file(path: Path) -> Manifest:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise IndexError_(f"{path}: manifest missing") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise IndexError_(f"{path}: unreadable manifest ({exc})") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise IndexError_(f"{path}: damaged manifest (invalid JSON: {exc})") from exc
    return Manifest.from_json(data, path)


def verify_checksums(gen: Path, manifest: Manifest, files: Sequence[str] = CHECKSUMMED) -> None:
    """sha256 of each file against the manifest; IndexError_ naming the first file that differs."""
    for file in files:
        path = gen / file
        expected = manifest.checksums.get(file)
        if expected is None:
            raise IndexError_(f"{gen / MANIFEST}: damaged manifest (no checksum for {file})")
        try:
            actual = content_hash(path)
        except FileNotFoundError as exc:
            raise IndexError_(f"{path}: missing") from exc
        except OSError as exc:
            raise IndexError_(f"{path}: unreadable ({exc})") from exc
        if actual != expected:
            raise IndexError_(f"{path}: checksum mismatch (file damaged or changed since it was written)")


def load_generation(index_dir: Path, *, load_index: bool = True) -> Generation:
    """Load and verify the live generation. Retries once if a concurrent writer swapped it meanwhile."""
    index_dir = Path(index_dir)
    for attempt in range(3):
        name = _require_current(index_dir)
        try:
            return _load(index_dir / name, load_index)
        except IndexError_ as exc:
            if attempt == 2 or current_generation(index_dir) == name:
                raise IndexError_(f"{exc}; {rebuild_hint(index_dir, name)}") from exc
            logger.debug("generation %s replaced while loading; retrying", name)
    raise AssertionError("unreachable")


def rebuild_hint(index_dir: Path, name: str) -> str:
    """How to replace a damaged generation: the `retrieval index ... --rebuild` line, with the folder and the
    model filled in from its manifest when that is still readable."""
    try:
        manifest = _read_manifest_file(Path(index_dir) / name / MANIFEST)
        folder, model = printable(manifest.root), printable(manifest.encoder_path)
    except IndexError_:
        folder, model = "FOLDER", "RUN"
    return f"rebuild it: retrieval index {folder} --model {model} --index {printable(str(index_dir))} --rebuild"


def _load(gen: Path, load_index: bool) -> Generation:
    manifest = _read_manifest_file(gen / MANIFEST)
    verify_checksums(gen, manifest, CHECKSUMMED if load_index else (CATALOG, VECTORS))
    with Catalog.open(gen / CATALOG) as catalog:
        records = catalog.records()
        bad = catalog.bad_files()
    try:
        vectors = np.load(gen / VECTORS, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise IndexError_(f"{gen / VECTORS}: unreadable ({exc})") from exc
    n = len(records)
    if vectors.dtype != np.float32 or vectors.shape != (n, manifest.dim):
        raise IndexError_(
            f"{gen / VECTORS}: shape {vectors.shape} {vectors.dtype} does not match the catalog"
            f" ({n} ok files, dim {manifest.dim})"
        )
    if any(r.id != i for i, r in enumerate(records)) or n != manifest.n_ok:
        raise IndexError_(f"{gen / CATALOG}: ids are not 0..{n - 1} or counts differ from the manifest")
    index = None
    if load_index:
        try:
            index = faiss.read_index(str(gen / INDEX))
        except RuntimeError as exc:
            raise IndexError_(f"{gen / INDEX}: unreadable FAISS index ({exc})") from exc
        if index.ntotal != n or index.d != manifest.dim:
            raise IndexError_(f"{gen / INDEX}: holds {index.ntotal}x{index.d}, catalog {n}x{manifest.dim}")
        apply_search_params(index, manifest.kind, manifest.params)
    return Generation(gen, manifest, records, bad, vectors, index)
