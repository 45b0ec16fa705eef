"""`retrieval eval knn|dedup|pairs --index indexes/NAME [--truth F | --pairs F] [--compare] [--format ...]`.

The figures go to stdout as a table, JSON (a stable document, README.md "retrieval eval") or CSV; what was
left out (names not in the index) is also said on stderr."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from cli.commands.bars import stderr_bars
from cli.commands.options import FormatOption, given
from plumbing.filenames import printable

if TYPE_CHECKING:
    from retrieval.evaluate.dedup import DedupEvalResult
    from retrieval.evaluate.knn import KnnEvalResult
    from retrieval.evaluate.metrics import PairwiseScore
    from retrieval.evaluate.pairs import PairsEvalResult
    from retrieval.evaluate.truth import Missing

JSON_VERSION = 1

eval_app = typer.Typer(
    help="Measure retrieval and duplicate finding on your own data (optionally against a random-init encoder).",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(eval_app, name="eval")


IndexOpt = typer.Option(..., "--index", help="Index folder (indexes/NAME).")
CompareOpt = typer.Option(
    False,
    "--compare",
    help="Also score a random-init encoder of the same architecture and size (and, for dedup, PHash).",
)
DeviceOpt = typer.Option(None, "--device", help="auto | cpu | cuda | mps (for embedding queries and --compare).")


@eval_app.command("knn")
def knn(
    index_dir: Path = IndexOpt,
    k: int | None = typer.Option(
        None, "-k", "--k", min=1, help="Neighbours that vote (default: as the MoCo kNN monitor)."
    ),
    temperature: float | None = typer.Option(
        None, "--temperature", help="Each votes exp(s/T) (default: as the MoCo kNN monitor)."
    ),
    compare: bool = CompareOpt,
    fmt: FormatOption = "table",
    device: str | None = DeviceOpt,
) -> None:
    """Category retrieval on an indexed labelled folder (label = first subfolder): precision@10 (the share of the
    first 10 results in the query's class), kNN top-1, MAP@R, recall@k."""
    from retrieval.evaluate.knn import KnnEvalConfig, evaluate_knn

    with stderr_bars() as bars:
        cfg = KnnEvalConfig(
            index=index_dir, compare=compare, progress=bars, **given(k=k, temperature=temperature, device=device)
        )
        result = evaluate_knn(cfg)
    typer.echo(format_knn(result, fmt), nl=False)


@eval_app.command("dedup")
def dedup(
    index_dir: Path = IndexOpt,
    truth: Path = typer.Option(..., "--truth", help='True groups: {"groups": [[file, ...], ...]}, root-relative.'),
    threshold: str | None = typer.Option(
        None, "--threshold", help="Preset (exact | strict | default | loose) or a score, as `retrieval dedup`."
    ),
    verify: bool | None = typer.Option(
        None, "--verify/--no-verify", help="Verify pairs near the threshold, as `retrieval dedup` (default on)."
    ),
    plot: Path | None = typer.Option(None, "--plot", help="Write the precision-recall curves to this PNG."),
    compare: bool = CompareOpt,
    fmt: FormatOption = "table",
    device: str | None = DeviceOpt,
) -> None:
    """Pairwise precision / recall / F1 of `retrieval dedup`'s groups against true groups; best F1 and PR curve."""
    from cli.commands.outputs import check_output_file
    from retrieval.dedup.threshold import Threshold
    from retrieval.evaluate.dedup import DedupEvalConfig, evaluate_dedup

    if plot is not None:
        check_output_file(plot, "--plot")  # before the work, not after it
    with stderr_bars() as bars:
        cfg = DedupEvalConfig(
            index=index_dir,
            truth=truth,
            compare=compare,
            progress=bars,
            **given(
                threshold=None if threshold is None else Threshold.parse(threshold),
                verify=verify,
                plot=plot,
                device=device,
            ),
        )
        result = evaluate_dedup(cfg)
    _echo_missing(result.missing, truth)
    typer.echo(format_dedup(result, fmt), nl=False)
    if plot is not None:
        typer.echo(f"precision-recall curve: {printable(str(plot))}", err=True)


@eval_app.command("pairs")
def pairs(
    index_dir: Path = IndexOpt,
    pairs_file: Path = typer.Option(..., "--pairs", help="[[query, match], ...]; matches root-relative."),
    compare: bool = CompareOpt,
    fmt: FormatOption = "table",
    device: str | None = DeviceOpt,
) -> None:
    """Instance retrieval: recall@1/10 and mAP of each query's matches (queries may be outside the index)."""
    from retrieval.evaluate.pairs import PairsEvalConfig, evaluate_pairs

    with stderr_bars() as bars:
        cfg = PairsEvalConfig(index=index_dir, pairs=pairs_file, compare=compare, progress=bars, **given(device=device))
        result = evaluate_pairs(cfg)
    _echo_missing(result.missing, pairs_file)
    typer.echo(format_pairs(result, fmt), nl=False)


def _echo_missing(missing: Missing, path: Path) -> None:
    if missing.count:
        more = ", ..." if missing.count > len(missing.first) else ""
        shown = printable(", ".join(missing.first))
        typer.echo(f"{printable(str(path))}: {missing.count} files not in the index, left out: {shown}{more}", err=True)


# -------------------------------------------------------------------------------------------- output


def _num(x: float | None) -> float | None:
    """JSON has no NaN: a figure with no query to average over is null."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def _missing_doc(m: Missing) -> dict[str, Any]:
    return {"count": m.count, "first": list(m.first)}


def _render(doc: dict[str, Any], header: str, columns: list[str], rows: list[list[Any]], fmt: str) -> str:
    """One document in the chosen format: JSON as is; CSV and table as `columns` over `rows`."""
    if fmt == "json":
        return json.dumps(doc, indent=2) + "\n"
    cells = [[_cell(v) for v in row] for row in rows]
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(cells)
        return buf.getvalue()
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = [header, "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines) + "\n"


def _cell(v: Any) -> str:  # noqa: ANN401
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:.4f}"
    return "-" if v is None else str(v)


def format_knn(r: KnnEvalResult, fmt: str) -> str:
    ks = list(r.config.recall_ks)
    pks = list(r.config.precision_ks)

    def figures(f: Any) -> dict[str, Any]:  # noqa: ANN401
        precision = {f"precision@{k}": _num(f.precision[k]) for k in pks}
        recall = {f"recall@{k}": _num(f.recall[k]) for k in ks}
        return {
            "queries": f.queries,
            **precision,
            "knn_top1": _num(f.knn_top1),
            "map_at_r": _num(f.map_at_r),
            **recall,
        }

    doc = {
        "format_version": JSON_VERSION,
        "mode": "knn",
        "index": str(r.config.index),
        "root": str(r.root),
        "files": r.files,
        "unlabelled": r.unlabelled,
        "classes": list(r.classes),
        "settings": {
            "k": r.config.k,
            "k_used": r.k_used,
            "temperature": r.config.temperature,
            "recall_ks": ks,
            "precision_ks": pks,
        },
        "methods": [
            {
                "method": m.method,
                "overall": figures(m.overall),
                "per_class": {c: figures(f) for c, f in m.per_class.items()},
            }
            for m in r.methods
        ],
    }
    columns = ["method", "class", "queries", *(f"precision@{k}" for k in pks), "knn_top1", "map_at_r"]
    columns += [f"recall@{k}" for k in ks]
    rows = []
    for m in r.methods:
        for scope, f in [("(all)", m.overall), *m.per_class.items()]:
            first_page = [f.precision[k] for k in pks]
            rows.append([m.method, scope, f.queries, *first_page, f.knn_top1, f.map_at_r, *(f.recall[k] for k in ks)])
    header = (
        f"knn on {r.config.index}: {r.files} files, {len(r.classes)} classes, {r.unlabelled} unlabelled"
        f" (leave one out; kNN k {r.k_used}, T {r.config.temperature})"
    )
    text = _render(doc, header, columns, rows, fmt)
    if fmt == "table":
        text += first_page_line(r)
    return text


def first_page_line(r: KnnEvalResult) -> str:
    """What a searcher sees, in one sentence: of the first k results, the share in the query's class (and a random
    network's with --compare)."""
    k = r.config.precision_ks[-1]
    scores = {m.method: m.overall.precision[k] for m in r.methods}
    if "index" not in scores or math.isnan(scores["index"]):
        return ""
    line = f"of the first {k} results, {scores['index']:.1%} share the query's category"
    if not math.isnan(scores.get("random-init", math.nan)):
        diff = scores["index"] - scores["random-init"]
        line += f", against {scores['random-init']:.1%} for a random network ({diff:+.3f})"
    return line + "\n"


def _prf(s: PairwiseScore) -> dict[str, Any]:
    return s.as_dict()


def format_dedup(r: DedupEvalResult, fmt: str) -> str:
    doc = {
        "format_version": JSON_VERSION,
        "mode": "dedup",
        "index": str(r.config.index),
        "root": str(r.root),
        "files": r.files,
        "truth": str(r.config.truth),
        "true_groups": r.true_groups,
        "missing": _missing_doc(r.missing),
        "settings": {"threshold": str(r.config.threshold), "verify": r.config.verify},
        "methods": [
            {
                "method": m.method,
                "threshold": m.threshold,
                "at_threshold": _prf(m.at_threshold),
                "best": {"threshold": m.best.threshold, **_prf(m.best.score)},
                "curve": [{"threshold": p.threshold, **_prf(p.score)} for p in m.curve],
                "seconds": round(m.seconds, 3),
                "similar_grouped": m.similar_grouped,
            }
            for m in r.methods
        ],
        "similar_pairs": r.similar_pairs,
    }
    columns = ["method", "threshold", "precision", "recall", "f1", "similar_grouped", "best_threshold"]
    columns += ["best_precision", "best_recall", "best_f1"]
    rows = []
    for m in r.methods:
        t = "exact" if m.threshold is None else (f"{m.threshold:g} bits" if m.method == "phash" else m.threshold)
        best = m.best.score
        s = m.at_threshold
        similar = f"{m.similar_grouped}/{r.similar_pairs}"
        rows.append([m.method, t, s.precision, s.recall, s.f1, similar, m.best.threshold, best.precision])
        rows[-1] += [best.recall, best.f1]
    verified = "verified" if r.config.verify else "score alone"
    header = (
        f"dedup on {r.config.index}: {r.files} files, {r.true_groups} true groups, {r.missing.count} truth files"
        f" not in the index; pairwise P/R/F1 at --threshold {r.config.threshold} ({verified}); similar_grouped: the"
        " truth's similar pairs (not duplicates) grouped; best over thresholds by the score alone"
    )
    return _render(doc, header, columns, rows, fmt)


def format_pairs(r: PairsEvalResult, fmt: str) -> str:
    ks = list(r.config.recall_ks)
    doc = {
        "format_version": JSON_VERSION,
        "mode": "pairs",
        "index": str(r.config.index),
        "root": str(r.root),
        "files": r.files,
        "pairs_file": str(r.config.pairs),
        "pairs": r.pairs,
        "embedded_queries": r.embedded,
        "missing": _missing_doc(r.missing),
        "settings": {"recall_ks": ks},
        "methods": [
            {"method": m.method, "queries": m.queries, **{f"recall@{k}": m.recall[k] for k in ks}, "map": m.mean_ap}
            for m in r.methods
        ],
    }
    columns = ["method", "queries", *(f"recall@{k}" for k in ks), "map"]
    rows = [[m.method, m.queries, *(m.recall[k] for k in ks), m.mean_ap] for m in r.methods]
    header = (
        f"pairs on {r.config.index}: {r.pairs} pairs, {r.embedded} queries embedded from disk, {r.missing.count}"
        " names not found (left out)"
    )
    return _render(doc, header, columns, rows, fmt)
