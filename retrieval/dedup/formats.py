"""Duplicate groups as text for a person or a script: the CLI's table, JSON and CSV, the app's export files,
the sizes the HTML report shows, and the calibration histogram. Pure functions: they return strings and
dicts, and print nothing."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Collection, Mapping, Sequence

from plumbing.filenames import printable
from retrieval.dedup.groups import Duplicate, Group
from retrieval.dedup.plan import PLAN_FORMAT, PLAN_VERSION
from retrieval.dedup.threshold import SCORE_PRESETS
from retrieval.records import FileRecord


def format_histogram(
    histogram: Sequence[tuple[float, float, int]],
    *,
    width: int = 40,
    marks: Mapping[str, float] | None = None,
) -> str:
    """Text bars, one line per bin, with the threshold presets marked in the bin they fall into."""
    if not histogram:
        return "(no similarities)"
    if marks is None:
        marks = SCORE_PRESETS
    peak = max(count for _, _, count in histogram) or 1
    lines = []
    last = len(histogram) - 1
    for b, (low, high, count) in enumerate(histogram):
        bar = "#" * round(width * count / peak)
        inside = [f"{name} {t:.2f}" for name, t in marks.items() if low <= t < high or (b == last and t == high)]
        note = f"  <- {', '.join(inside)}" if inside else ""
        lines.append(f"{low:6.3f} - {high:6.3f} {count:>9}  {bar:<{width}}{note}".rstrip())
    return "\n".join(lines)


def human_size(n_bytes: int) -> str:
    """1536 -> "1.5 KB"."""
    if n_bytes < 1024:
        return f"{n_bytes} B"
    size = n_bytes / 1024
    for unit in ("KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            break
        size /= 1024
    return f"{size:.1f} {unit}"


def groups_to_json(
    groups: Sequence[Group],
    threshold: float | None,
    similar: Sequence[Group] = (),
    *,
    index: Mapping[str, str] | None = None,
    stays: Collection[str] = (),
) -> dict:
    """The move plan a person reviews (`retrieval.dedup.plan`): {"format", "format_version", "index" (with
    `index`: `plan.index_identity`), "threshold": t or null (exact only), "groups": [{"keep", "keep_sha256",
    "duplicates": [{path, sha256, score, kind, check, move}]}]}, and with `similar` groups (`retrieval dedup
    --similar`) "similar": [{"keep", "keep_sha256", "similar": [... "move": false]}] too. `check`: what the pair to
    the keeper was decided on (`verify.rule.Evidence.check`; "bytes" for identical files). Duplicates move unless
    their path is in `stays` (a person said "not a duplicate"); similar pictures never, unless edited to. Paths
    are exact: a non-UTF-8 name keeps its bytes as `\\udcNN` escapes (json.dumps' default), which
    `os.fsencode(json.loads(...))` turns back into the name on disk."""
    t = None if threshold is None else float(threshold)

    def members(g: Group, move: bool) -> list[dict]:
        return [
            {
                "path": d.record.path,
                "sha256": d.record.content_hash,
                "score": round(float(d.score), 6),
                "kind": d.kind,
                "check": check_of(d),
                "move": move and d.kind != "similar" and d.record.path not in stays,
            }
            for d in g.duplicates
        ]

    def group(g: Group, key: str, move: bool) -> dict:
        return {"keep": g.keep.path, "keep_sha256": g.keep.content_hash, key: members(g, move)}

    doc: dict = {"format": PLAN_FORMAT, "format_version": PLAN_VERSION}
    if index is not None:
        doc["index"] = dict(index)
    doc |= {"threshold": t, "groups": [group(g, "duplicates", True) for g in groups]}
    if similar:
        doc["similar"] = [group(g, "similar", False) for g in similar]
    return doc


def check_of(d: Duplicate) -> str:
    """Which check let `d` join its keeper: bytes, score, alignment, keypoints, or none (similar only)."""
    if d.evidence is not None:
        return d.evidence.check
    return "bytes" if d.kind == "exact" else "alignment" if d.alignment is not None else "score"


CHECK_TEXT = {
    "bytes": "identical bytes",
    "score": "score alone (verification off)",
    "alignment": "the pictures line up",
    "keypoints": "keypoints agree on one geometry",
    "none": "no duplicate check passed (similar)",
}


def why(d: Duplicate) -> str:
    """Why `d` joined its keeper, for a person: kind, score, the check that passed and its measurements."""
    check = check_of(d)
    parts = [d.kind, f"score {d.score:.3f}", CHECK_TEXT.get(check, check)]
    ev = d.evidence
    if check == "alignment" or (ev is None and d.alignment is not None):
        a = d.alignment if ev is None or ev.alignment is None else ev.alignment
        parts.append(f"alignment {a:.2f}")
    if ev is not None and ev.inliers is not None and check in ("keypoints", "none"):
        parts.append(f"{ev.inliers} matched points")
        if ev.agreement is not None:
            parts.append(f"edges agree {ev.agreement:.2f}")
        if ev.conflict is not None:
            parts.append(f"conflict {ev.conflict:.2f}")
    return " · ".join(parts)


def file_facts(r: FileRecord) -> str:
    """Pixels, bytes and date of a file, as the tab and the report show them side by side."""
    return f"{r.width}x{r.height} · {human_size(r.size)} · {file_date(r)}"


def file_date(r: FileRecord) -> str:
    """The file's modification time as indexed, UTC, to the minute."""
    when = dt.datetime.fromtimestamp(r.mtime_ns / 1e9, tz=dt.timezone.utc)
    return when.strftime("%Y-%m-%d %H:%M")


CSV_COLUMNS = ("group", "role", "path", "score", "kind")


def groups_to_csv(groups: Sequence[Group], similar: Sequence[Group] = ()) -> str:
    """One row per file: group number (from 1), role keep/duplicate, path, score, kind (empty for keep); then the
    similar groups, numbered on, roles "shown" and "similar"."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for n, g in enumerate(groups, start=1):
        writer.writerow([n, "keep", printable(g.keep.path), "", ""])
        for d in g.duplicates:
            writer.writerow([n, "duplicate", printable(d.record.path), f"{d.score:.6f}", d.kind])
    for n, g in enumerate(similar, start=len(groups) + 1):
        writer.writerow([n, "shown", printable(g.keep.path), "", ""])
        for d in g.duplicates:
            writer.writerow([n, "similar", printable(d.record.path), f"{d.score:.6f}", d.kind])
    return buf.getvalue()


def similar_to_table(similar: Sequence[Group]) -> str:
    """The similar groups of `retrieval dedup --similar`: shown, never moved."""
    if not similar:
        return "No similar pictures found."
    lines = []
    for n, g in enumerate(similar, start=1):
        lines.append(f"similar {n}: {printable(g.keep.path)}")
        lines += [f"  {d.score:6.4f}  similar  {printable(d.record.path)}" for d in g.duplicates]
    n_similar = sum(len(g.duplicates) for g in similar)
    lines.append(
        f"{len(similar)} similar groups, {n_similar} similar pictures (different shots or drawings: never moved)"
    )
    return "\n".join(lines)


def groups_to_table(groups: Sequence[Group]) -> str:
    if not groups:
        return "No duplicates found."
    lines = []
    for n, g in enumerate(groups, start=1):
        k = g.keep
        lines.append(f"group {n}: keep {printable(k.path)}  ({k.width}x{k.height}, {human_size(k.size)})")
        for d in g.duplicates:
            r = d.record
            size = f"({r.width}x{r.height}, {human_size(r.size)})"
            lines.append(f"  {d.score:6.4f}  {d.kind:<5}  {printable(r.path)}  {size}")
    n_dups = sum(len(g.duplicates) for g in groups)
    n_bytes = sum(d.record.size for g in groups for d in g.duplicates)
    lines.append(f"{len(groups)} groups, {n_dups} duplicates, {human_size(n_bytes)} in duplicates")
    return "\n".join(lines)
