"""Edited undo logs (issue 25): a real `dedup --apply` log, edited at random, run through `undo_moves`.

Each case builds a fresh folder (photos/ the root, dups/ the move-to folder, outside/ a stranger's files),
moves one duplicate with the real `apply_moves`, plants hazards (a symlink from dups/ into the root, one
from the root out, a hard link of a photo in dups/, a stray file, a symlinked file), then makes 1-3 edits
to the log: a record added, a field of a record replaced, the header's root or move_to replaced, a record
repeated, source and destination swapped; paths drawn from every file, folder and link there, names that
do not exist yet (`outside/home/.config/autostart/x.png`), `..`, relative and Windows spellings, a NUL.

The oracle, whatever undo did (refused or acted):
- every name under photos/ before is there after, with the same bytes (undo never removes a name there);
- outside/ is unchanged, entry for entry, and nothing new appears outside photos/ (no folder is created
  outside the root);
- each new file under photos/ holds the bytes of a file that left dups/ (undo only moves files out of it);
- no `.partial` file anywhere; a refusal changes nothing at all; only InputError is raised.

    python -m tests.reliability.undo.undo_fuzz --cases 2000 --seed 0

`kill_loop` (`--kills N`) SIGKILLs a real cross-device undo (the root on /dev/shm, move_to on the disk) at a
random moment, its copies slowed to 4 KB a step so the kill lands mid-copy too, then runs undo again: the
tree must be back byte for byte, and every `.partial` the kill left must be removed and reported.

`long_log` (`--long N [--restore]`) times `check_undo_log` (and with `--restore` the whole undo) on a valid
log of N records, and reports the peak memory it took.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from plumbing.errors import InputError
from retrieval.dedup.groups import Duplicate, Group
from retrieval.dedup.moves import (
    MOVE_LOG_FORMAT,
    MOVE_LOG_VERSION,
    apply_moves,
    check_undo_log,
    plan_moves,
    undo_moves,
)
from retrieval.records import FileRecord


@dataclass
class Tally:
    cases: int = 0
    refused: int = 0
    acted: int = 0  # undo ran (restored, found in place or reported problems)
    restored_files: int = 0
    reasons: Counter = field(default_factory=Counter)  # refusals by their reason's first words
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_of(folder: Path) -> dict[str, str]:
    """Every entry under `folder` without following symlinks: files by sha256, folders and links by kind."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(folder).as_posix()
            if p.is_symlink():
                out[rel] = "link->" + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = _sha(p)
    return out


def _build(base: Path, rng: random.Random) -> tuple[Path, Path, Path, Path]:
    root, dups, outside = base / "photos", base / "dups", base / "outside"
    (root / "sub").mkdir(parents=True)
    (outside / "home").mkdir(parents=True)
    keep = b"kept photo" * 50
    for rel, data in {"keep.png": keep, "sub/dup.png": keep, "a.png": b"photo a", "sub/b.jpg": b"photo b"}.items():
        (root / rel).write_bytes(data)
    (outside / "stranger.png").write_bytes(b"somebody else's file")
    (outside / "payload.png").write_bytes(b"a payload")

    def rec(i: int, rel: str) -> FileRecord:
        p = root / rel
        return FileRecord(i, rel, p.stat().st_size, p.stat().st_mtime_ns, _sha(p), 8, 8)

    log = dups / "undo.jsonl"
    groups = [Group(rec(0, "keep.png"), (Duplicate(rec(1, "sub/dup.png"), 1.0, "exact"),))]
    apply_moves(plan_moves(groups, root, dups), root, dups, log)
    hazards = [
        lambda: (dups / "link").symlink_to(root, target_is_directory=True),
        lambda: (root / "esc").symlink_to(outside, target_is_directory=True),
        lambda: os.link(root / "a.png", dups / "a.png"),
        lambda: os.link(root / "keep.png", dups / "sub" / "k.png"),
        lambda: (dups / "sub" / "x.png").write_bytes(b"stray file in dups"),
        lambda: (dups / "s.png").symlink_to(outside / "stranger.png"),
        lambda: shutil.copyfile(outside / "payload.png", dups / "payload.png"),
    ]
    for hazard in rng.sample(hazards, rng.randint(0, len(hazards))):
        hazard()
    return root.resolve(), dups.resolve(), outside.resolve(), log


def _pool(base: Path, root: Path, dups: Path, outside: Path) -> list[str]:
    """Paths an edit may name: everything there, plus names that do not exist and odd spellings."""
    paths = [str(p) for p in sorted(base.resolve().rglob("*"))]
    paths += [str(root), str(dups), str(outside), "/", str(base.resolve())]
    paths += [
        str(root / "new.png"),
        str(root / "sub" / "new" / "deeper.png"),
        str(dups / "new.png"),
        str(dups / "link" / "a.png"),
        str(dups / "link" / "keep.png"),
        str(root / "esc" / "stranger.png"),
        str(root / "esc" / "new.png"),
        str(outside / "home" / ".config" / "autostart" / "x.png"),
        str(root / ".config" / "x.png"),
        str(dups / ".config" / "x.png"),
        f"{root}/../outside/stranger.png",
        f"{dups}/./sub/dup.png",
        f"{root}//a.png",
        "photos/a.png",
        "C:\\photos\\a.png",
        str(root / "a\0.png"),
        str(root / "run.sh"),
        "",
    ]
    return paths


def _digest_of(path: str, rng: random.Random) -> str:
    try:
        if rng.random() < 0.9 and os.path.isfile(path):
            return _sha(Path(path))
    except (OSError, ValueError):
        pass
    return rng.choice(["0" * 64, hashlib.sha256(str(rng.random()).encode()).hexdigest(), "not a sha"])


def _edit(lines: list[dict], pool: list[str], rng: random.Random) -> None:
    header = lines[0]
    moves = [r for r in lines if r["type"] == "move"]
    kind = rng.choices(["add", "field", "header", "repeat", "swap"], weights=[6, 1, 1, 1, 1])[0]
    if kind == "add" or not moves:
        src, dst = rng.choice(pool), rng.choice(pool)
        if rng.random() < 0.8:  # the same relative path on both sides, as apply writes it
            folders = [f + "/" for f in (header["root"], header["move_to"]) if isinstance(f, str)]
            rels = [p[len(f) :] for p in pool for f in folders if p.startswith(f)]
            if rng.random() < 0.8:  # mostly paths apply could have written: the checks on the disk get their turn
                rels = [r for r in rels if r and os.path.normpath(r) == r and not r.startswith("/")]
            rel = rng.choice(rels or ["x.png"])
            src, dst = f"{header['root']}/{rel}", f"{header['move_to']}/{rel}"
        lines.append(
            {
                "type": "move",
                "session": header["session"],
                "seq": len(lines),
                "source": src,
                "destination": dst,
                "sha256": _digest_of(dst, rng),
                "keeper": rng.choice(pool),
            }
        )
    elif kind == "field":
        rec = rng.choice(moves)
        key = rng.choice(["source", "destination", "keeper", "session", "sha256"])
        rec[key] = rng.choice(pool) if key != "session" else rng.choice(["forged", 7, None])
    elif kind == "header":
        header[rng.choice(["root", "move_to"])] = rng.choice(pool)
    elif kind == "repeat":
        lines.append(dict(rng.choice(moves)))
    else:
        rec = rng.choice(moves)
        rec["source"], rec["destination"] = rec["destination"], rec["source"]


REASONS = {  # a phrase of each refusal message -> what it is about
    "NUL byte": "a NUL byte",
    "backslash": "a Windows-style path",
    "not an absolute path": "a relative path",
    "normal form": "., .. or //",
    "is not a path": "not a path",
    "needs session": "a field missing",
    "is not under the root": "source not under the root",
    "where apply moves": "destination not the source's place in move_to",
    "outside the root": "a symlink on the way out of the root",
    "outside the move-to folder": "a symlink on the way out of move_to",
    "hard link": "a hard link of a file under the root",
    "is hidden": "a hidden name",
    "not an image file name": "not an image file name",
    "sha256": "not a sha256",
    "session": "another session",
    "repeats": "a repeated record",
    "overlap": "header: root and move_to overlap",
    "is not a folder": "header: a folder that is not one",
    "not a folder; nothing to restore": "header: a folder that is not one",
    "the header names no": "header: a folder missing",
    "the header's": "header: a folder that is no path",
    "a symbolic link; apply": "the moved copy is a symlink",
    "not a regular file; apply": "the moved copy is not a file",
}


def _reason_kind(message: str) -> str:
    for phrase, kind in REASONS.items():
        if phrase in message:
            return kind
    return message


def one_case(base: Path, rng: random.Random, tally: Tally) -> None:
    root, dups, outside, log = _build(base, rng)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    pool = _pool(base, root, dups, outside)
    for _ in range(rng.choices([1, 2, 3], weights=[6, 3, 1])[0]):
        _edit(lines, pool, rng)
    log.write_text("".join(json.dumps(rec) + "\n" for rec in lines))
    before = {name: tree_of(base / name) for name in ("photos", "dups", "outside")}
    everything = tree_of(base)
    tally.cases += 1
    fail = tally.failures.append
    try:
        report = undo_moves(log)
    except InputError as e:
        tally.refused += 1
        tally.reasons[_reason_kind(str(e))] += 1
        if tree_of(base) != everything:
            fail(f"case {tally.cases}: refused ({e}) but the folders changed")
        return
    except Exception as e:  # noqa: BLE001
        fail(f"case {tally.cases}: {type(e).__name__}: {e}")
        return
    tally.acted += 1
    tally.restored_files += len(report.restored)
    try:
        undo_moves(log)  # a second run is harmless
    except Exception as e:  # noqa: BLE001
        fail(f"case {tally.cases}: the second undo raised {type(e).__name__}: {e}")
    after = {name: tree_of(base / name) for name in ("photos", "dups", "outside")}
    lost = {k for k, v in before["photos"].items() if after["photos"].get(k) != v}
    if lost:
        fail(f"case {tally.cases}: names under the root removed or changed: {sorted(lost)}")
    if after["outside"] != before["outside"]:
        fail(f"case {tally.cases}: outside/ changed")
    new = sorted(k for k in set(tree_of(base)) - set(everything) if not k.startswith("photos/"))
    if new:
        fail(f"case {tally.cases}: something new outside the root: {new}")
    gone = Counter(v for k, v in before["dups"].items() if k not in after["dups"])
    for k in set(after["photos"]) - set(before["photos"]):
        v = after["photos"][k]
        if v == "dir":
            continue
        if gone[v] == 0:
            fail(f"case {tally.cases}: photos/{k} is new but no file with its bytes left dups/")
        gone[v] -= 1
    if [p for p in base.rglob("*") if p.name.endswith(".partial")]:
        fail(f"case {tally.cases}: a .partial file is left")


def run(cases: int, seed: int = 0, work: Path | None = None) -> Tally:
    t0 = time.perf_counter()
    rng = random.Random(seed)
    tally = Tally()
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        for k in range(cases):
            base = Path(tmp) / f"case{k}"
            one_case(base, rng, tally)
            shutil.rmtree(base, ignore_errors=True)
    tally.seconds = time.perf_counter() - t0
    return tally


_SLOW_UNDO = """
import shutil, sys, time
import retrieval.dedup.moves as moves

def slow_copy(src, dst, *args, **kwargs):
    with open(src, "rb") as a, open(dst, "wb") as b:
        while chunk := a.read(4096):
            b.write(chunk)
            b.flush()
            time.sleep(0.002)
    shutil.copystat(src, dst)

moves.shutil.copy2 = slow_copy
print("ready", flush=True)
moves.undo_moves(sys.argv[1])
"""


@dataclass
class KillTally:
    kills: int = 0
    partials_left: int = 0  # .partial files found after a kill
    partials_reported: int = 0  # ... removed by the rerun and listed in its report
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0


def kill_loop(kills: int, seed: int = 0, work: Path | None = None, shm: Path = Path("/dev/shm")) -> KillTally:
    """SIGKILL `undo` mid-way through cross-device moves (root on `shm`, move_to under `work`), rerun it."""
    t0 = time.perf_counter()
    rng = random.Random(seed)
    tally = KillTally()
    repo = Path(__file__).resolve().parents[3]
    for k in range(kills):
        with tempfile.TemporaryDirectory(dir=shm) as fast, tempfile.TemporaryDirectory(dir=work) as disk:
            root, dups, log = Path(fast) / "photos", Path(disk) / "dups", Path(disk) / "undo.jsonl"
            keep = rng.randbytes(64 * 1024)
            (root / "sub").mkdir(parents=True)
            (root / "keep.png").write_bytes(keep)
            for i in range(3):
                (root / "sub" / f"dup{i}.png").write_bytes(keep)
            before = tree_of(root)

            def rec(i: int, rel: str, root: Path = root) -> FileRecord:
                p = root / rel
                return FileRecord(i, rel, p.stat().st_size, p.stat().st_mtime_ns, _sha(p), 8, 8)

            dup = tuple(Duplicate(rec(i + 1, f"sub/dup{i}.png"), 1.0, "exact") for i in range(3))
            groups = [Group(rec(0, "keep.png"), dup)]
            if len(apply_moves(plan_moves(groups, root, dups), root, dups, log).moved) != 3:
                tally.failures.append(f"round {k}: apply did not move 3 files")
                continue
            proc = subprocess.Popen(
                [sys.executable, "-c", _SLOW_UNDO, str(log)], cwd=repo, stdout=subprocess.PIPE, text=True
            )
            assert proc.stdout is not None
            proc.stdout.readline()  # "ready"
            time.sleep(rng.uniform(0.0, 0.15))  # three copies of 16 steps of about 2-3 ms
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            tally.kills += 1
            left = {str(p) for p in Path(fast).rglob("*.partial")} | {str(p) for p in Path(disk).rglob("*.partial")}
            tally.partials_left += len(left)
            try:
                report = undo_moves(log)
            except Exception as e:  # noqa: BLE001
                tally.failures.append(f"round {k}: the rerun raised {type(e).__name__}: {e}")
                continue
            tally.partials_reported += len(set(report.partials_removed) & left)
            if set(report.partials_removed) != left:
                tally.failures.append(f"round {k}: left {sorted(left)}, reported {report.partials_removed}")
            if not report.ok or tree_of(root) != before:
                tally.failures.append(f"round {k}: not restored byte for byte: {report}")
            if list(Path(fast).rglob("*.partial")) or list(Path(disk).rglob("*.partial")):
                tally.failures.append(f"round {k}: a .partial file is still there")
    tally.seconds = time.perf_counter() - t0
    return tally


def long_log(n: int, restore: bool = False, work: Path | None = None) -> str:
    """A valid log of `n` records (files in 100 folders): seconds and peak memory to check it (and to undo it)."""
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        root, dups = Path(tmp).resolve() / "photos", Path(tmp).resolve() / "dups"
        header = {"type": "header", "format": MOVE_LOG_FORMAT, "version": MOVE_LOG_VERSION, "session": "s"}
        lines = [json.dumps({**header, "root": str(root), "move_to": str(dups)})]
        for i in range(n):
            rel = f"d{i % 100:03d}/f{i:07d}.png"
            data = f"file {i}".encode()
            for folder in (root, dups):
                (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (dups / rel).write_bytes(data)
            digest = hashlib.sha256(data).hexdigest()
            move = {"type": "move", "session": "s", "seq": i, "source": str(root / rel)}
            lines.append(json.dumps({**move, "destination": str(dups / rel), "sha256": digest}))
            lines.append(json.dumps({"type": "done", "session": "s", "seq": i}))
        log = Path(tmp) / "undo.jsonl"
        log.write_text("\n".join(lines) + "\n")
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        restores = check_undo_log(log)
        seconds, rss = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0
        size = log.stat().st_size / 1e6
        out = f"{len(restores)} records ({size:.1f} MB log): checked in {seconds:.1f} s, peak RSS +{rss / 1024:.0f} MB"
        del restores
        if restore:
            t0 = time.perf_counter()
            report = undo_moves(log)
            seconds = time.perf_counter() - t0
            out += f"; undo restored {len(report.restored)} in {seconds:.1f} s ({len(report.problems)} problems)"
        return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kills", type=int, default=0, help="SIGKILL loop of cross-device undo instead")
    parser.add_argument("--long", type=int, default=0, help="time the check of a valid log of N records instead")
    parser.add_argument("--restore", action="store_true", help="with --long: time the whole undo too")
    args = parser.parse_args(argv)
    if args.long:
        print(long_log(args.long, args.restore))
        return 0
    if args.kills:
        kt = kill_loop(args.kills, args.seed)
        print(
            f"{kt.kills} SIGKILLs of a cross-device undo: {kt.partials_left} .partial files left by the kills,"
            f" {kt.partials_reported} removed and reported by the rerun, {len(kt.failures)} failures,"
            f" {kt.seconds:.1f} s"
        )
        for f in kt.failures[:20]:
            print("FAIL", f)
        return 1 if kt.failures else 0
    tally = run(args.cases, args.seed)
    print(
        f"{tally.cases} edited logs: {tally.refused} refused, {tally.acted} acted on ({tally.restored_files} files"
        f" restored), {len(tally.failures)} failures, {tally.seconds:.1f} s"
    )
    for reason, n in tally.reasons.most_common():
        print(f"  refused {n:5d}: {reason}")
    for f in tally.failures[:20]:
        print("FAIL", f)
    return 1 if tally.failures else 0


if __name__ == "__main__":
    sys.exit(main())
