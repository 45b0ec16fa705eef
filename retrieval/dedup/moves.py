"""Acting on duplicate groups safely: move duplicates aside, with an undo log. Nothing is deleted.

- `plan_moves` picks the files to move: duplicates only, never a keeper, never a file that is the
  keeper under another name (hard link, symlink), never a symlink.
- `apply_moves` re-checks each file just before moving it (still there, same size and sha256,
  keeper still there and unchanged, destination free), appends an intent line to the undo log and
  fsyncs it *before* the move, then a "done" line after. A crash mid-way leaves a log that
  `undo_moves` can act on: undo looks at the filesystem, not at the "done" lines.
- `undo_moves` puts every moved file back at its original path, checking its sha256, never
  overwriting a file that reappeared there; running it twice is harmless.

The undo log may have been edited (it lives in the move-to folder). `check_undo_log` checks the whole
log before anything moves and refuses it, naming the line, if any record could act outside what apply
does: the header's root and move_to exist and do not overlap; each record's original lies under the
root and its moved copy under move_to at the same relative path, after every symlink on the way; that
path is an image's, without hidden parts; the moved copy is a regular file, not a hard link of another
file under the root. Undo then only moves files out of move_to: under the root it adds names and
creates missing folders (never outside it), and the one name it removes there is a `.partial`
temporary copy of its own whose bytes another file holds.

Policy for `move_to`: it must not overlap the indexed root (neither inside it nor containing it),
so moved files are never re-indexed and a destination can never land on an original; use a
sibling folder such as `photos-duplicates/`. Files keep their path relative to the root.

A move is `os.link` + `os.unlink` on the same filesystem (no overwrite, no window where the file
has no name), falling back to an existence check + `os.rename` where hard links are not
supported; across filesystems it is copy2 to a temporary name derived from the file
(`.NAME.SHA16.partial`, so a run killed mid-copy leaves a name the next run finds), fsync, sha256
check, link into place, then unlink of the source.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from plumbing.atomic import fsync_dir
from plumbing.errors import DiskFullError, FormatVersionError, InputError, is_disk_full
from plumbing.filenames import printable
from plumbing.hashing import CHUNK_BYTES, content_hash
from plumbing.images import IMAGE_EXTENSIONS
from retrieval.dedup.groups import Group, normalise_path

log = logging.getLogger(__name__)

MOVE_LOG_FORMAT = "retrieval-move-log"
MOVE_LOG_VERSION = 1


@dataclass(frozen=True)
class PlannedMove:
    """Move `source` (relative to the root) to the same relative path under move_to."""

    source: str
    keeper: str  # relative path of the group's keeper, which must survive the move
    size: int  # as indexed
    content_hash: str  # sha256 as indexed
    keeper_size: int
    keeper_hash: str
    score: float
    kind: str

    @property
    def destination(self) -> str:
        return self.source


@dataclass(frozen=True)
class SkippedMove:
    path: str
    reason: str


@dataclass(frozen=True)
class MovePlan:
    """The moves to make and the duplicates left in place (with why). Iterates over the moves."""

    moves: tuple[PlannedMove, ...]
    skipped: tuple[SkippedMove, ...] = ()

    def __iter__(self) -> Iterator[PlannedMove]:
        return iter(self.moves)

    def __len__(self) -> int:
        return len(self.moves)


@dataclass(frozen=True)
class MoveReport:
    moved: tuple[PlannedMove, ...]
    skipped: tuple[SkippedMove, ...]
    log_path: Path

    @property
    def bytes_moved(self) -> int:
        return sum(m.size for m in self.moved)


@dataclass(frozen=True)
class UndoReport:
    restored: tuple[str, ...]  # original paths a file was moved back to
    already_in_place: tuple[str, ...]  # original paths that needed nothing (never moved, or undone)
    problems: tuple[SkippedMove, ...]  # original paths left alone, with the reason
    extra_copies: tuple[str, ...] = ()  # verified copies left under move_to by an interrupted move
    partials_removed: tuple[
        str, ...
    ] = ()  # torn temporary copies of an interrupted run, removed (bytes held elsewhere)

    @property
    def ok(self) -> bool:
        return not self.problems


# ---------------------------------------------------------------------------------------------------
# Small file helpers


_fsync_dir = fsync_dir  # one implementation: moco.checkpoint


def _lstat(path: Path | str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _same_filesystem(src: Path, dst_dir: Path) -> bool:
    return os.stat(src).st_dev == os.stat(dst_dir).st_dev


def _rename_no_replace(src: Path, dst: Path) -> None:
    """Give `src` the name `dst` on the same filesystem; FileExistsError if `dst` exists."""
    try:
        os.link(src, dst, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError:  # no hard links here (FAT, some network shares): check, then rename
        if os.path.lexists(dst):
            raise FileExistsError(f"{dst} exists") from None
        os.rename(src, dst)
        return
    try:
        os.unlink(src)
    except OSError:
        os.unlink(dst)  # our second name for the file; the original stays where it was
        raise


def _partial_path(final: Path, sha: str) -> Path:
    """The one temporary name a cross-device copy of `final` (bytes with this sha256) is written under, next
    to it: derived from the file, so that a run killed mid-copy leaves a name the next run looks for."""
    name = f".{final.name}.{sha[:16]}.partial"
    if len(os.fsencode(name)) > 255:  # NAME_MAX: a long name is stood for by its own hash
        name = f".{hashlib.sha256(os.fsencode(final.name)).hexdigest()[:16]}.{sha[:16]}.partial"
    return final.with_name(name)


def _is_prefix(part: Path, whole: Path) -> bool:
    """The bytes of `part` are the first bytes of `whole`."""
    with open(part, "rb") as a, open(whole, "rb") as b:
        while chunk := a.read(CHUNK_BYTES):
            if b.read(len(chunk)) != chunk:
                return False
    return True


def _clear_partial(tmp: Path, holders: Sequence[Path], sha: str) -> str:
    """Remove `tmp` (a `_partial_path`) when an interrupted copy left it and its bytes are held by one of
    `holders` (the file copied, or the copy's final name): "absent", "removed", or "foreign" (anything else
    there, left alone)."""
    st = _lstat(tmp)
    if st is None:
        return "absent"
    if not stat.S_ISREG(st.st_mode):
        return "foreign"
    for holder in holders:
        h = _lstat(holder)
        if h is None or not stat.S_ISREG(h.st_mode):
            continue
        same_inode = (h.st_dev, h.st_ino) == (st.st_dev, st.st_ino)  # killed before the temporary name went
        torn = st.st_nlink == 1 and st.st_size <= h.st_size and content_hash(holder) == sha and _is_prefix(tmp, holder)
        if same_inode or torn:
            os.unlink(tmp)
            _fsync_dir(tmp.parent)
            log.debug("removed %s, the temporary copy of an interrupted run", tmp)
            return "removed"
    return "foreign"


def _move_file(src: Path, dst: Path, expected_hash: str) -> None:
    """Move one file into an existing folder without ever overwriting; verified by sha256 when bytes are copied."""
    if os.path.lexists(dst):
        raise FileExistsError(f"{dst} exists")
    if _same_filesystem(src, dst.parent):
        _rename_no_replace(src, dst)
    else:
        tmp = _partial_path(dst, expected_hash)
        if _clear_partial(tmp, (src, dst), expected_hash) == "foreign":
            raise FileExistsError(f"{tmp} exists and is not an interrupted copy of {src}")
        try:
            shutil.copy2(src, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        except OSError:
            tmp.unlink(missing_ok=True)  # our own incomplete copy (a full disk, a read error)
            raise
        if content_hash(tmp) != expected_hash:
            os.unlink(tmp)  # our own incomplete copy
            raise OSError(f"copy of {src} to {dst} does not match its sha256")
        try:
            _rename_no_replace(tmp, dst)
        except FileExistsError:
            os.unlink(tmp)
            raise
        _fsync_dir(dst.parent)
        os.unlink(src)
    _fsync_dir(dst.parent)
    _fsync_dir(src.parent)


def _relative(path: str) -> PurePosixPath | None:
    """A catalog path as a safe relative path, or None if it is absolute or climbs out of the root."""
    p = PurePosixPath(normalise_path(path))
    if p.is_absolute() or not p.parts or p.parts[0] in ("..", "."):
        return None
    return p


def _overlaps(a: Path, b: Path) -> bool:
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)


def _destination_problem(root: Path, move_to: Path, rel: PurePosixPath) -> str | None:
    """Why `move_to / rel` cannot receive a file of `root`: it exists, or a symlinked folder on its way
    leads outside `move_to` or back into the root (where a move could land on, or be, its own source)."""
    dst = move_to / rel
    if os.path.lexists(dst):
        return f"destination {dst} exists; not overwritten"
    real = dst.parent.resolve()  # resolves the symlinked folders that exist on the way
    if _overlaps(real, root) or not real.is_relative_to(move_to):
        return f"destination {dst} leads to {real} through a symbolic link; not moved"
    return None


def check_move_target(root: Path, move_to: Path) -> tuple[Path, Path]:
    """(root, move_to) resolved; InputError if move_to overlaps the root or is not a folder."""
    root_r = Path(root).resolve()
    move_r = Path(move_to).resolve()
    if not root_r.is_dir():
        raise InputError(f"{root}: the indexed folder does not exist")
    if _overlaps(root_r, move_r):
        raise InputError(
            f"{move_to}: the move-to folder must be outside the indexed folder {root} "
            "(and not contain it), e.g. a sibling folder"
        )
    if move_r.exists() and not move_r.is_dir():
        raise InputError(f"{move_to}: exists and is not a folder")
    return root_r, move_r


# ---------------------------------------------------------------------------------------------------
# Plan


def plan_moves(groups: Sequence[Group], root: Path, move_to: Path) -> MovePlan:
    """Which duplicates to move into `move_to` (keeping relative paths), and which to leave, with why."""
    root_r, move_r = check_move_target(root, move_to)
    keeper_paths = {normalise_path(g.keep.path) for g in groups}
    keeper_inodes: set[tuple[int, int]] = set()
    for g in groups:
        rel = _relative(g.keep.path)
        if rel is not None:
            try:
                st = os.stat(root_r / rel)
                keeper_inodes.add((st.st_dev, st.st_ino))
            except OSError:
                pass
    moves: list[PlannedMove] = []
    skipped: list[SkippedMove] = []
    planned: set[str] = set()
    for g in groups:
        keep_rel = _relative(g.keep.path)
        if keep_rel is None:
            skipped.extend(SkippedMove(d.record.path, "keeper path is outside the root") for d in g.duplicates)
            continue
        keep_abs = root_r / keep_rel
        if not keep_abs.is_file():
            skipped.extend(SkippedMove(d.record.path, f"keeper {g.keep.path} is missing") for d in g.duplicates)
            continue
        for d in g.duplicates:
            path = d.record.path
            rel = _relative(path)
            reason = None
            if rel is None:
                reason = "path is outside the root"
            elif str(rel) in keeper_paths:
                reason = "is a keeper (the same path as the file kept)"
            elif str(rel) in planned:
                reason = "already planned"
            elif (why := _unrestorable(str(rel))) is not None:
                reason = why
            else:
                src = root_r / rel
                try:
                    st = os.lstat(src)
                except OSError:
                    reason = "missing"
                else:
                    if stat.S_ISLNK(st.st_mode):
                        reason = "is a symbolic link; not moved"
                    elif not stat.S_ISREG(st.st_mode):
                        reason = "not a regular file"
                    elif (st.st_dev, st.st_ino) in keeper_inodes:
                        reason = "is the same file as a keeper (hard link or symlink target)"
                    else:
                        reason = _destination_problem(root_r, move_r, rel)
            if reason is not None:
                skipped.append(SkippedMove(path, reason))
                continue
            planned.add(str(rel))
            moves.append(
                PlannedMove(
                    source=str(rel),
                    keeper=str(keep_rel),
                    size=d.record.size,
                    content_hash=d.record.content_hash,
                    keeper_size=g.keep.size,
                    keeper_hash=g.keep.content_hash,
                    score=float(d.score),
                    kind=d.kind,
                )
            )
    for s in skipped:  # the front ends list them; logged for the library's own callers
        log.debug("leaving %s: %s", s.path, s.reason)
    return MovePlan(moves=tuple(moves), skipped=tuple(skipped))


# ---------------------------------------------------------------------------------------------------
# Apply


class _MoveLog:
    """Append-only JSON lines, flushed and fsynced line by line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._f: IO[str] | None = None

    def __enter__(self) -> _MoveLog:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists() and self.path.stat().st_size > 0:
                _read_header(self.path)  # appending to something that is not a move log: refuse
            self._f = open(self.path, "a", encoding="utf-8")  # closed in __exit__
        except OSError as e:
            raise InputError(f"{self.path}: cannot write the move log ({e.strerror or e})") from None
        _fsync_dir(self.path.parent)
        return self

    def write(self, record: dict) -> None:
        assert self._f is not None
        try:
            self._f.write(json.dumps(record) + "\n")
            self._f.flush()
            os.fsync(self._f.fileno())
        except OSError as e:
            with contextlib.suppress(OSError):  # its buffer cannot be flushed either
                self._f.close()
            self._f = None
            kind = DiskFullError if is_disk_full(e) else InputError
            raise kind(
                f"{self.path}: cannot write the move log ({e.strerror or e}); no file was moved without a record"
                f" in it, and `retrieval undo {self.path}` puts back the ones moved"
            ) from None

    def __exit__(self, *exc: object) -> None:
        if self._f is not None:
            self._f.close()


def _precheck(
    m: PlannedMove, root: Path, move_to: Path, keepers: dict[str, str | None], keeper_paths: set[str]
) -> str | None:
    """Why `m` must not happen now, or None if it may."""
    src_rel, keep_rel = _relative(m.source), _relative(m.keeper)
    if src_rel is None or keep_rel is None:
        return "not a safe move (path outside the root)"
    if (why := _unrestorable(str(src_rel))) is not None:
        return why
    if str(src_rel) in keeper_paths:
        return "is a keeper; keepers are never moved"
    if m.keeper not in keepers:
        keep_abs = root / keep_rel
        try:
            st = os.stat(keep_abs)
            if not stat.S_ISREG(st.st_mode):
                keepers[m.keeper] = f"keeper {m.keeper} is not a regular file"
            elif st.st_size != m.keeper_size or content_hash(keep_abs) != m.keeper_hash:
                keepers[m.keeper] = f"keeper {m.keeper} changed since indexing"
            else:
                keepers[m.keeper] = None
        except OSError:
            keepers[m.keeper] = f"keeper {m.keeper} is missing"
    if keepers[m.keeper] is not None:
        return keepers[m.keeper]
    src = root / src_rel
    try:
        st = os.lstat(src)
    except OSError:
        return "missing"
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link; not moved"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if os.path.samefile(src, root / keep_rel):
        return "is the same file as its keeper (hard link)"
    if st.st_size != m.size or content_hash(src) != m.content_hash:
        return "changed since indexing"
    return _destination_problem(root, move_to, src_rel)


def check_moves(moves: Sequence[PlannedMove], root: Path, move_to: Path) -> list[SkippedMove]:
    """The moves `apply_moves` would refuse now, with why, made with its own checks; nothing is moved. `root` and
    `move_to` as `check_move_target` resolves them."""
    keepers: dict[str, str | None] = {}
    keeper_paths = {normalise_path(m.keeper) for m in moves}
    refused: list[SkippedMove] = []
    for m in moves:
        reason = _precheck(m, root, move_to, keepers, keeper_paths)
        if reason is not None:
            refused.append(SkippedMove(m.source, reason))
    return refused


def apply_moves(
    plan: MovePlan | Sequence[PlannedMove],
    root: Path,
    move_to: Path,
    log_path: Path,
) -> MoveReport:
    """Make the planned moves, each re-checked just before, recording each in the undo log first."""
    root_r, move_r = check_move_target(root, move_to)
    try:
        move_r.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{move_to}: cannot create the move-to folder ({e.strerror or e})") from None
    if not os.access(move_r, os.W_OK | os.X_OK):
        raise InputError(f"{move_to}: the move-to folder is not writable")
    moves = tuple(plan.moves if isinstance(plan, MovePlan) else plan)
    session = uuid.uuid4().hex
    moved: list[PlannedMove] = []
    skipped: list[SkippedMove] = []
    keepers: dict[str, str | None] = {}
    keeper_paths = {normalise_path(m.keeper) for m in moves}
    full: int | None = None  # moves done when the move-to device filled up
    with _MoveLog(Path(log_path)) as undo_log:
        undo_log.write(
            {
                "type": "header",
                "format": MOVE_LOG_FORMAT,
                "version": MOVE_LOG_VERSION,
                "session": session,
                "root": str(root_r),
                "move_to": str(move_r),
                "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            }
        )
        for seq, m in enumerate(moves):
            reason = _precheck(m, root_r, move_r, keepers, keeper_paths)
            if reason is not None:
                log.debug("skipping %s: %s", m.source, reason)
                skipped.append(SkippedMove(m.source, reason))
                continue
            src, dst = root_r / m.source, move_r / m.destination
            undo_log.write(
                {
                    "type": "move",
                    "session": session,
                    "seq": seq,
                    "source": str(src),
                    "destination": str(dst),
                    "size": m.size,
                    "sha256": m.content_hash,
                    "keeper": str(root_r / m.keeper),
                }
            )
            try:
                dst.parent.mkdir(parents=True, exist_ok=True)  # inside move_to: _destination_problem
                _move_file(src, dst, m.content_hash)
            except OSError as e:
                reason = f"move failed: {e.strerror or e}"
                log.warning("%s: %s", m.source, reason)
                undo_log.write({"type": "failed", "session": session, "seq": seq, "reason": reason})
                skipped.append(SkippedMove(m.source, reason))
                if is_disk_full(e):  # every later copy would fail the same way
                    full = len(moved)
                    break
                continue
            undo_log.write({"type": "done", "session": session, "seq": seq})
            moved.append(m)
        undo_log.write({"type": "end", "session": session, "moved": len(moved), "skipped": len(skipped)})
    if full is not None:
        raise DiskFullError(
            f"{move_to}: no space left on the device after {full} of {len(moves)} moves; every file not moved"
            f" is still in its place; `retrieval undo {log_path}` puts back the ones moved"
        )
    log.debug("moved %d files to %s, skipped %d; undo log %s", len(moved), move_r, len(skipped), log_path)
    return MoveReport(moved=tuple(moved), skipped=tuple(skipped), log_path=Path(log_path))


# ---------------------------------------------------------------------------------------------------
# Undo: the whole log is checked before anything moves

MAX_LINE_BYTES = 1 << 20  # a move record is a few KB (two paths of at most 4 KB, JSON-escaped): longer is not one
_MAX_PATH_BYTES = 4096  # PATH_MAX on Linux
_SHA256 = re.compile(r"[0-9a-f]{64}")
# what plumbing.images lists (and so what apply can ever move), HEIF included whether pillow-heif is here or not
RESTORABLE_EXTENSIONS = IMAGE_EXTENSIONS | {".heic", ".heif"}


def _records(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, record) for every line, read one line at a time; a torn last line (crash while writing)
    is ignored. InputError naming the file and the line for anything that is not a move-log record."""
    try:
        f = open(path, "rb")  # closed below
    except FileNotFoundError:
        raise InputError(f"{path}: no such move log") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read the move log ({e.strerror or e})") from None
    with f:
        n = 0
        header_seen = False
        while True:
            try:
                raw = f.readline(MAX_LINE_BYTES + 1)
            except OSError as e:
                raise InputError(f"{path}: cannot read the move log ({e.strerror or e})") from None
            if not raw:
                break
            n += 1
            if not raw.endswith(b"\n"):
                if len(raw) > MAX_LINE_BYTES:
                    raise InputError(f"{path}: line {n} is longer than any move-log record")
                if raw.strip():  # after the last newline: a write torn by a crash
                    log.warning("%s: ignoring an incomplete last line (interrupted write)", path)
                break
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                raise InputError(f"{path}: line {n} is not UTF-8 text") from None
            except (ValueError, RecursionError):  # JSONDecodeError, an integer of a million digits, deep nesting
                raise InputError(f"{path}: line {n} is not valid JSON") from None
            if not isinstance(rec, dict) or not isinstance(rec.get("type"), str):
                raise InputError(f"{path}: line {n} is not a move-log record")
            if not header_seen and rec["type"] != "header":
                raise InputError(f"{path}: not a move log (no header line)")
            if rec["type"] == "header":
                header_seen = True
                if rec.get("format") != MOVE_LOG_FORMAT:
                    raise InputError(f"{path}: line {n}: not a {MOVE_LOG_FORMAT}")
                version = rec.get("version")
                if not isinstance(version, int):
                    raise InputError(f"{path}: line {n}: the header has no version")
                if version > MOVE_LOG_VERSION:
                    raise FormatVersionError(
                        f"{path}: move log version {version} is newer than this program reads "
                        f"({MOVE_LOG_VERSION}); upgrade retrieval"
                    )
            yield n, rec
        if not header_seen:
            raise InputError(f"{path}: not a move log (no header line)")


def _parse_log(path: Path) -> list[tuple[int, dict]]:
    """Every record of the log (see `_records`)."""
    return list(_records(path))


def _read_header(path: Path) -> dict:
    records = _records(path)
    try:
        return next(records)[1]
    finally:
        records.close()


@dataclass(frozen=True)
class _Folders:
    """One session's header: its folders as written and as they resolve now."""

    root: str
    move_to: str
    real_root: str
    real_move_to: str
    session: str


@dataclass(frozen=True)
class _Restore:
    """One checked move record. `original` and `moved` are real paths: their folders resolved (inside the real
    root and the real move_to), the file name as recorded (a symlink there is not followed)."""

    line: int
    source: str  # as recorded: what the person reads
    original: str
    moved: str
    sha: str
    folders: _Folders


def _path_problem(value: object) -> str | None:
    """Why `value` is not a path as `apply_moves` writes one (absolute, in normal form), or None."""
    if not isinstance(value, str) or not value:
        return "is not a path"
    if "\0" in value:
        return "contains a NUL byte"
    if os.sep == "/" and "\\" in value:
        return "contains a backslash (a Windows-style path)"
    if not os.path.isabs(value):
        return "is not an absolute path"
    if os.path.normpath(value) != value or value.startswith("//"):
        return "is not in normal form (., .., // or a trailing /)"
    try:
        if len(os.fsencode(value)) > _MAX_PATH_BYTES:
            return "is longer than any path"
    except UnicodeEncodeError:
        return "is not a valid file name"
    return None


def _inside(folder: str, path: str) -> bool:
    """`path` is `folder` or lies under it (both absolute, in normal form)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _under(path: str, folder: str) -> str | None:
    """`path` relative to `folder` as written (no symlink resolved), or None when it is not under it."""
    prefix = folder.rstrip(os.sep) + os.sep
    return path[len(prefix) :] if path.startswith(prefix) and len(path) > len(prefix) else None


def _real_entry(path: str, realpath: Callable[[str], str] = os.path.realpath) -> str:
    """`path` with its folder resolved through every symlink, the last name kept (not followed)."""
    folder, name = os.path.split(path)
    return os.path.join(realpath(folder), name)


def _unrestorable(rel: str) -> str | None:
    """Why undo refuses a record of this relative path, which apply therefore never moves, or None: a hidden
    part or a name that is not an image's (nothing the index lists; an edited log's way into ~/.config)."""
    parts = rel.split("/")
    if any(part.startswith(".") for part in parts):
        return "is hidden (a name starting with '.'): never indexed, never moved"
    if os.path.splitext(parts[-1])[1].lower() not in RESTORABLE_EXTENSIONS:
        return "is not an image file name: only images are indexed and moved"
    return None


def _checked_header(path: Path, n: int, rec: dict) -> _Folders:
    where = f"{path}: line {n}:"
    for key in ("root", "move_to"):
        if key not in rec:
            raise InputError(f"{where} the header names no {key} folder; undo needs both to check every record")
        problem = _path_problem(rec[key])
        if problem is not None:
            raise InputError(f"{where} the header's {key} {printable(str(rec[key]))[:300]} {problem}")
    session = rec.get("session")
    if not isinstance(session, str):
        raise InputError(f"{where} the header has no session")
    root, move_to = rec["root"], rec["move_to"]
    real_root, real_move_to = os.path.realpath(root), os.path.realpath(move_to)
    if not os.path.isdir(real_root):
        raise InputError(f"{where} the root {printable(root)} is not a folder (moved or removed?); nothing restored")
    if not os.path.isdir(real_move_to):
        raise InputError(f"{where} the move-to folder {printable(move_to)} is not a folder; nothing to restore from")
    if _inside(real_root, real_move_to) or _inside(real_move_to, real_root):
        raise InputError(
            f"{where} the move-to folder {printable(move_to)} and the root {printable(root)} overlap"
            " (apply never writes such a log); nothing restored"
        )
    return _Folders(root, move_to, real_root, real_move_to, session)


def _checked_record(
    path: Path, n: int, rec: dict, folders: _Folders, realpath: Callable[[str], str] = os.path.realpath
) -> _Restore:
    """The record as a restore that stays inside its folders; InputError naming the line otherwise."""
    where = f"{path}: line {n}:"
    if not all(key in rec for key in ("session", "source", "destination", "sha256")):
        raise InputError(f"{where} a move record needs session, source, destination and sha256")
    if rec["session"] != folders.session:
        raise InputError(f"{where} the move record is not from its header's session")
    for key in ("source", "destination"):
        problem = _path_problem(rec.get(key))
        if problem is not None:
            raise InputError(f"{where} the {key} {printable(str(rec.get(key)))[:300]} {problem}")
    sha = rec.get("sha256")
    if not (isinstance(sha, str) and _SHA256.fullmatch(sha)):
        raise InputError(f"{where} the sha256 is not 64 hex digits")
    source, destination = rec["source"], rec["destination"]
    rel = _under(source, folders.root)
    if rel is None:
        raise InputError(f"{where} the source {printable(source)} is not under the root {printable(folders.root)}")
    if _under(destination, folders.move_to) != rel:
        raise InputError(
            f"{where} the destination {printable(destination)} is not {printable(os.path.join(folders.move_to, rel))},"
            f" where apply moves {printable(source)}"
        )
    why = _unrestorable(rel)
    if why is not None:
        raise InputError(f"{where} {printable(rel)} {why}")
    original, moved = _real_entry(source, realpath), _real_entry(destination, realpath)
    if not _inside(folders.real_root, os.path.dirname(original)):
        raise InputError(
            f"{where} the source {printable(source)} leads to {printable(original)} (a symbolic link on the way),"
            f" outside the root {printable(folders.real_root)}"
        )
    if not _inside(folders.real_move_to, os.path.dirname(moved)):
        raise InputError(
            f"{where} the destination {printable(destination)} leads to {printable(moved)} (a symbolic link on the"
            f" way), outside the move-to folder {printable(folders.real_move_to)}"
        )
    st = _lstat(moved)
    if st is not None and not stat.S_ISREG(st.st_mode):
        what = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a regular file"
        raise InputError(f"{where} the moved copy {printable(destination)} is {what}; apply only moves files")
    return _Restore(n, source, original, moved, sha, folders)


def _keeper_identity(
    rec: dict, folders: _Folders, realpath: Callable[[str], str] = os.path.realpath
) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the record's keeper when it names a file under the root, else None."""
    keeper = rec.get("keeper")
    if _path_problem(keeper) is not None or _under(str(keeper), folders.root) is None:
        return None
    real = _real_entry(str(keeper), realpath)
    st = _lstat(real) if _inside(folders.real_root, os.path.dirname(real)) else None
    return (st.st_dev, st.st_ino) if st is not None and stat.S_ISREG(st.st_mode) else None


def check_undo_log(log_path: Path) -> list[_Restore]:
    """Every move record of the log, checked before anything moves; InputError (file, line, reason) for the
    first that undo must not act on, which refuses the whole log:

    - the header names its root and move-to folder, both existing folders that do not overlap (after symlinks);
    - each record is from its header's session, with a sha256 and absolute paths in normal form (no NUL,
      no Windows spelling), the source under the root and the destination under move_to at the same
      relative path, which is an image file name without hidden parts (all that apply ever moves);
    - both stay inside their folder after every symlink on the way; the moved copy, where it is, is a regular
      file and not a hard link of another file under the root that the log names (a keeper, another
      record's original): only its own original may share its inode (apply killed between link and unlink);
    - no record appears twice in one session."""
    log_path = Path(log_path)
    realpath = functools.lru_cache(maxsize=1 << 16)(os.path.realpath)  # records share their folders
    restores: list[_Restore] = []
    root_files: dict[tuple[int, int], str] = {}  # identities of the files under the root that the log names
    linked: list[tuple[_Restore, os.stat_result, os.stat_result | None]] = []  # moved copies with other names
    seen: dict[tuple[str, str], int] = {}
    folders: _Folders | None = None
    for n, rec in _records(log_path):
        if rec["type"] == "header":
            folders = _checked_header(log_path, n, rec)
        elif rec["type"] == "move":
            assert folders is not None  # _records: the first record is a header
            r = _checked_record(log_path, n, rec, folders, realpath)
            first = seen.setdefault((folders.session, r.moved), n)
            if first != n:
                raise InputError(f"{log_path}: line {n}: repeats the move of line {first}")
            restores.append(r)
            keeper = _keeper_identity(rec, folders, realpath)
            if keeper is not None:
                root_files.setdefault(keeper, str(rec["keeper"]))
            own = _lstat(r.original)
            if own is not None and stat.S_ISREG(own.st_mode):
                root_files.setdefault((own.st_dev, own.st_ino), r.source)
            moved = _lstat(r.moved)
            if moved is not None and moved.st_nlink > 1:
                linked.append((r, moved, own))
    for r, st, own in linked:
        other = root_files.get((st.st_dev, st.st_ino))
        if other is not None and not (own is not None and (own.st_dev, own.st_ino) == (st.st_dev, st.st_ino)):
            raise InputError(
                f"{log_path}: line {r.line}: the moved copy {printable(r.moved)} is a hard link of"
                f" {printable(other)} under the root, not a moved file; nothing restored"
            )
    return restores


def _verified(path: Path, sha: str) -> bool:
    """`path` is a regular file whose bytes have this sha256."""
    st = _lstat(path)
    return st is not None and stat.S_ISREG(st.st_mode) and content_hash(path) == sha


def _make_folders(root: str, folder: str) -> None:
    """Create `folder` and its missing parents one at a time, all inside `root` (a real path): undo never
    creates a folder outside the root. OSError when that cannot be done."""
    missing: list[str] = []
    while not os.path.lexists(folder):
        missing.append(folder)
        folder = os.path.dirname(folder)
    if not _inside(root, os.path.realpath(folder)):
        raise OSError(f"{folder} leads outside the root {root}")
    for f in reversed(missing):
        os.mkdir(f)


def _undo_one(r: _Restore) -> tuple[str, str]:
    """Put one moved file back: ("restored" | "in_place" | "extra" | "problem", reason). Every branch checks
    the sha256 before it acts and after. The only name it ever removes is the moved copy's, in move_to, and
    only where its original holds the same inode; under the root it only adds the original's name."""
    if _real_entry(r.original) != r.original or _real_entry(r.moved) != r.moved:
        return "problem", "a folder on the way became a symbolic link after the log was checked; left alone"
    src, dst = Path(r.original), Path(r.moved)
    src_st, dst_st = _lstat(src), _lstat(dst)
    if src_st is not None and not stat.S_ISREG(src_st.st_mode):
        return "problem", f"the original path is not a regular file; {dst} left alone"
    if dst_st is not None and not stat.S_ISREG(dst_st.st_mode):
        return "problem", f"{dst} is not a regular file; not restored"
    if src_st is not None and dst_st is not None:
        if (src_st.st_dev, src_st.st_ino) == (dst_st.st_dev, dst_st.st_ino):
            if content_hash(src) != r.sha:
                return "problem", f"{dst} changed since it was moved; not restored"
            os.unlink(dst)  # apply was killed between link and unlink: drop its name in move_to
            _fsync_dir(dst.parent)
            if not _verified(src, r.sha):
                return "problem", "the file at the original path no longer matches its sha256"
            return "restored", ""
        if content_hash(src) == r.sha:  # interrupted copy: the original is still intact
            return ("extra", "") if content_hash(dst) == r.sha else ("in_place", "")
        return "problem", f"a different file is at the original path; {dst} left alone"
    if dst_st is not None:
        if content_hash(dst) != r.sha:
            return "problem", f"{dst} changed since it was moved; not restored"
        _make_folders(r.folders.real_root, str(src.parent))
        _move_file(dst, src, r.sha)
        if not _verified(src, r.sha):
            return "problem", "the restored file does not match its sha256"
        return "restored", ""
    if src_st is not None:
        if content_hash(src) == r.sha:
            return "in_place", ""
        return "problem", f"a different file is at the original path and {dst} is gone"
    return "problem", f"neither the original nor {dst} exists"


def undo_moves(log_path: Path) -> UndoReport:
    """Move every file recorded in the log back to its original path (latest first), verified by sha256.
    The whole log is checked first (`check_undo_log`): one record undo must not act on refuses it all,
    before anything moves. Temporary copies left by an interrupted cross-device move (or undo) of a
    recorded file are removed when their bytes are held by the file they copy, reported otherwise."""
    restores = check_undo_log(Path(log_path))
    restored: list[str] = []
    in_place: list[str] = []
    problems: list[SkippedMove] = []
    extra: list[str] = []
    partials: list[str] = []
    for r in reversed(restores):
        holders = (Path(r.original), Path(r.moved))
        try:
            for final in holders:
                tmp = _partial_path(final, r.sha)
                outcome = _clear_partial(tmp, holders, r.sha)
                if outcome == "removed":
                    partials.append(str(tmp))
                elif outcome == "foreign":
                    problems.append(
                        SkippedMove(str(tmp), "holds other bytes than an interrupted copy would; left alone")
                    )
            outcome, reason = _undo_one(r)
        except OSError as e:
            outcome, reason = "problem", f"cannot restore from {r.moved}: {e.strerror or e}"
        if outcome == "restored":
            restored.append(r.source)
        elif outcome == "problem":
            problems.append(SkippedMove(r.source, reason))
        else:
            in_place.append(r.source)
            if outcome == "extra":
                extra.append(r.moved)
    for p in problems:
        log.debug("not restored %s: %s", p.path, p.reason)
    log.debug("restored %d files, %d already in place, %d problems", len(restored), len(in_place), len(problems))
    return UndoReport(
        restored=tuple(restored),
        already_in_place=tuple(in_place),
        problems=tuple(problems),
        extra_copies=tuple(extra),
        partials_removed=tuple(partials),
    )
