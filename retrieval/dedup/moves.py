"""Acting on duplicate groups safely: move duplicates aside, with an undo log. Nothing is deleted.

- `plan_moves` picks the files to move: duplicates only, never a keeper, never a file that is the
  keeper under another name (hard link, symlink), never a symlink.
- `apply_moves` re-checks each file just before moving it (still there, same size and sha256,
  keeper still there and unchanged, destination free), appends an intent line to the undo log and
  fsyncs it *before* the move, then a "done" line after. A crash mid-way leaves a log that
  `undo_moves` can act on: undo looks at the filesystem, not at the "done" lines.
- `undo_moves` puts every moved file back at its original path, checking its sha256, never
  overwriting a file that reappeared there; running it twice is harmless.

Policy for `move_to`: it must not overlap the indexed root (neither inside it nor containing it),
so moved files are never re-indexed and a destination can never land on an original; use a
sibling folder such as `photos-duplicates/`. Files keep their path relative to the root.

A move is `os.link` + `os.unlink` on the same filesystem (no overwrite, no window where the file
has no name), falling back to an existence check + `os.rename` where hard links are not
supported; across filesystems it is copy2 to a temporary name, fsync, sha256 check, link into
place, then unlink of the source.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import shutil
import stat
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from plumbing.atomic import fsync_dir
from plumbing.errors import DiskFullError, FormatVersionError, InputError, is_disk_full
from plumbing.hashing import content_hash
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

    @property
    def ok(self) -> bool:
        return not self.problems


# ---------------------------------------------------------------------------------------------------
# Small file helpers


_fsync_dir = fsync_dir  # one implementation: moco.checkpoint


def _lstat(path: Path) -> os.stat_result | None:
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


def _move_file(src: Path, dst: Path, expected_hash: str) -> None:
    """Move one file without ever overwriting; verified by sha256 when bytes are copied."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(dst):
        raise FileExistsError(f"{dst} exists")
    if _same_filesystem(src, dst.parent):
        _rename_no_replace(src, dst)
    else:
        tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:12]}.partial")
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
    for s in skipped:
        log.info("leaving %s: %s", s.path, s.reason)
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
                log.info("skipping %s: %s", m.source, reason)
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
    log.info("moved %d files to %s, skipped %d; undo log %s", len(moved), move_r, len(skipped), log_path)
    return MoveReport(moved=tuple(moved), skipped=tuple(skipped), log_path=Path(log_path))


# ---------------------------------------------------------------------------------------------------
# Undo


def _parse_log(path: Path) -> list[tuple[int, dict]]:
    """(line number, record) for every line; a torn last line (crash while writing) is ignored."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such move log") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read the move log ({e})") from None
    lines = text.split("\n")
    torn = lines.pop() if lines else ""  # after the last newline: empty unless the last write was torn
    records: list[tuple[int, dict]] = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            raise InputError(f"{path}: line {n} is not valid JSON") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("type"), str):
            raise InputError(f"{path}: line {n} is not a move-log record")
        records.append((n, rec))
    if torn.strip():
        log.warning("%s: ignoring an incomplete last line (interrupted write)", path)
    if not records or records[0][1]["type"] != "header":
        raise InputError(f"{path}: not a move log (no header line)")
    for n, rec in records:
        if rec["type"] == "header":
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
    return records


def _read_header(path: Path) -> dict:
    return _parse_log(path)[0][1]


def _intent(path: Path, n: int, rec: dict) -> tuple[Path, Path, str]:
    source, destination, sha = rec.get("source"), rec.get("destination"), rec.get("sha256")
    if not (isinstance(source, str) and isinstance(destination, str) and isinstance(sha, str)):
        raise InputError(f"{path}: line {n}: a move record needs source, destination and sha256")
    return Path(source), Path(destination), sha


def _same_entry(a: Path, a_st: os.stat_result, b: Path, b_st: os.stat_result) -> bool:
    """Whether two paths of one inode are one directory entry (the same path, or the same path reached
    through a symlinked folder), so that unlinking either would remove the file, not a second name of it.
    Errs towards True: one link only, or the same folder and names equal but for case."""
    if (a_st.st_dev, a_st.st_ino) != (b_st.st_dev, b_st.st_ino):
        return False
    if a_st.st_nlink < 2:
        return True
    try:
        same_folder = os.path.samefile(a.parent, b.parent)
    except OSError:
        return True
    return same_folder and a.name.casefold() == b.name.casefold()


def _verified(path: Path, sha: str) -> bool:
    """`path` is a regular file whose bytes have this sha256."""
    st = _lstat(path)
    return st is not None and stat.S_ISREG(st.st_mode) and content_hash(path) == sha


def _undo_one(src: Path, dst: Path, sha: str) -> tuple[str, str]:
    """Put one moved file back: ("restored" | "in_place" | "extra" | "problem", reason). Every branch checks
    the sha256 before it acts and after, and none removes a name unless another name of the same bytes
    (a distinct directory entry) stays behind."""
    src_st, dst_st = _lstat(src), _lstat(dst)
    if src_st is not None and not stat.S_ISREG(src_st.st_mode):
        return "problem", f"the original path is not a regular file; {dst} left alone"
    if dst_st is not None and not stat.S_ISREG(dst_st.st_mode):
        return "problem", f"{dst} is not a regular file; not restored"
    if src_st is not None and dst_st is not None:
        if _same_entry(src, src_st, dst, dst_st):
            return "problem", f"the record's source and destination {dst} are the same file; left alone"
        if (src_st.st_dev, src_st.st_ino) == (dst_st.st_dev, dst_st.st_ino):
            if content_hash(src) != sha:
                return "problem", f"{dst} changed since it was moved; not restored"
            os.unlink(dst)  # interrupted link + unlink: two names of one file, drop ours
            _fsync_dir(dst.parent)
            if not _verified(src, sha):
                return "problem", "the file at the original path no longer matches its sha256"
            return "restored", ""
        if content_hash(src) == sha:  # interrupted copy: the original is still intact
            return ("extra", "") if content_hash(dst) == sha else ("in_place", "")
        return "problem", f"a different file is at the original path; {dst} left alone"
    if dst_st is not None:
        if content_hash(dst) != sha:
            return "problem", f"{dst} changed since it was moved; not restored"
        _move_file(dst, src, sha)
        if not _verified(src, sha):
            return "problem", "the restored file does not match its sha256"
        return "restored", ""
    if src_st is not None:
        if content_hash(src) == sha:
            return "in_place", ""
        return "problem", f"a different file is at the original path and {dst} is gone"
    return "problem", f"neither the original nor {dst} exists"


def undo_moves(log_path: Path) -> UndoReport:
    """Move every file recorded in the log back to its original path (latest first), verified by sha256."""
    log_path = Path(log_path)
    intents = [_intent(log_path, n, rec) for n, rec in _parse_log(log_path) if rec["type"] == "move"]
    restored: list[str] = []
    in_place: list[str] = []
    problems: list[SkippedMove] = []
    extra: list[str] = []
    for src, dst, sha in reversed(intents):
        try:
            outcome, reason = _undo_one(src, dst, sha)
        except OSError as e:
            outcome, reason = "problem", f"cannot restore from {dst}: {e.strerror or e}"
        if outcome == "restored":
            restored.append(str(src))
        elif outcome == "problem":
            problems.append(SkippedMove(str(src), reason))
        else:
            in_place.append(str(src))
            if outcome == "extra":
                extra.append(str(dst))
    for p in problems:
        log.warning("not restored %s: %s", p.path, p.reason)
    log.info("restored %d files, %d already in place, %d problems", len(restored), len(in_place), len(problems))
    return UndoReport(
        restored=tuple(restored),
        already_in_place=tuple(in_place),
        problems=tuple(problems),
        extra_copies=tuple(extra),
    )
