"""Near duplicates on photo sources the pipeline was never tuned on: `retrieval dedup` on the tuning and
the held-out folder of bench/kit/neardup_family.py, beside imagededup's PHash and a random-init encoder.

    python -m bench.dedup.family ~/.cache/retrieval-datasets [--work /tmp/dedup-family] [--budget 8] [--reuse]

1. Builds the family (bench/kit/neardup_family.py) unless WORK has it; `retrieval train --preset copy-detection`
   on the tuning folder only (--time-budget BUDGET, CPU; --reuse keeps WORK/run), a random-init encoder of
   the same architecture and preprocessing; `retrieval index` of both folders with both encoders.
2. At the default threshold, pairwise P / R / F1 of the groups find_groups forms (as `retrieval dedup` does,
   from the index's records and vectors) with: no verification; the crop-correlation verifier as it was
   before issue 16 (alignment promotes down to t - VERIFY_BELOW); the crop verifier with today's rule;
   local-feature geometry alone; both (the default). Each pair's pictures are checked once per folder.
3. The constants of the rule (threshold, MIN_INLIERS, STRONG_INLIERS, ALIGN_BELOW) swept one at a time on
   the tuning folder, the held-out folder shown beside it (it chose nothing).
4. Recall per edit kind and number of edits, false pairs per distractor kind, cost per pair.
Writes bench/results/dedup_family.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from bench.dedup.quality import phash_groups
from bench.kit.eval_cli import run
from bench.kit.machine import machine_info
from bench.kit.neardup_eval import pairwise_prf
from bench.kit.neardup_family import HELDOUT_PHOTOS, TUNING_PHOTOS, build
from bench.kit.results import publish
from moco.export import read_spec, save_random_encoder
from moco.measure.metrics_log import last_step, read_metrics
from moco.preprocess import PRESET_PREPROCESSING
from retrieval.dedup import groups as dedup
from retrieval.dedup.candidates import feature_votes
from retrieval.dedup.groups import GroupingConfig, PairChecks, find_groups
from retrieval.dedup.threshold import SCORE_PRESETS as THRESHOLD_PRESETS
from retrieval.dedup.verify import keypoints as local_features
from retrieval.dedup.verify import rule
from retrieval.dedup.verify.align import folder_thumbnails
from retrieval.dedup.verify.keypoints import folder_features
from retrieval.dedup.verify.pair_reads import GeometryEvidence, PairEvidence, feature_geometry, thumbnail_evidence
from retrieval.evaluate.metrics import pair_set as pairs_of
from retrieval.searching.searcher import SearchIndex

FOLDERS = ("tuning", "heldout")
THRESHOLDS = [0.2, 0.24, 0.28, 0.32, 0.36, 0.4]
VERIFY_BELOW = [0.26, 0.38, 0.48]
LOW_PARTNERS = [0, 3, 8, 1000]
VOTE_PARTNERS = [1, 3, 5, 8]
MIN_VOTES = [5, 8, 12, 20]
INLIERS = [5, 8, 10, 12, 15, 20]
STRONG = [8, 12, 15, 20, 40, 1000]
CONTAINED = [0.0, 0.8, 0.85, 0.9, 0.95]
ALIGN_BELOW = [0.0, 0.05, 0.1, 0.15, 0.2, 0.26]
MIN_AGREEMENT = [0.0, 0.4, 0.5, 0.6, 0.7, 0.8]  # 0: the aligned overlap not checked (MAX_SCALE still)
MAX_SCALE = [4.0, 6.0, 8.0, 1e9]
MAX_CONFLICT = [0.3, 0.4, 0.5, 0.6, 1.0]
MIN_SPREAD = [0.0, 0.2, 0.3, 0.35, 0.4, 0.5]


@contextmanager
def patched(**values: float) -> Iterator[None]:
    """The constants of retrieval.dedup.groups and .feature_votes set to `values` for the block."""
    home = {k: next(m for m in (feature_votes, local_features, rule, dedup) if hasattr(m, k)) for k in values}
    before = {k: getattr(home[k], k) for k in values}
    for k, v in values.items():
        setattr(home[k], k, v)
    try:
        yield
    finally:
        for k, v in before.items():
            setattr(home[k], k, v)


class FolderPairs:
    """Memoised pair checks over one folder, keyed by path, so every variant and sweep pays once per pair."""

    def __init__(self, images: Path) -> None:
        self.images = images
        self._thumb: dict[str, np.ndarray | None] = {}
        self._feat: dict[str, object | None] = {}
        self._evidence: dict[tuple[str, str], tuple[float, bool]] = {}
        self._geometry: dict[tuple[str, str], GeometryEvidence] = {}
        self._votes: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self.seconds = {"thumbnails": 0.0, "alignment": 0.0, "features": 0.0, "matching": 0.0, "votes": 0.0}
        self.counts = {"pictures_thumb": 0, "pairs_aligned": 0, "pictures_features": 0, "pairs_matched": 0}
        self.counts |= {"pictures_voting": 0, "pairs_voted": 0}

    def _memo(self, load: Callable[[int], Any], store: dict[str, Any], paths: list[str], kind: str, count: str):
        """id -> load(id), once per path, its time added to seconds[kind] and counts[count]."""

        def get(i: int) -> Any:
            p = paths[i]
            if p not in store:
                t = time.perf_counter()
                store[p] = load(i)
                self.seconds[kind] += time.perf_counter() - t
                self.counts[count] += 1
            return store[p]

        return get

    def checks(self, paths: list[str], crop: bool, local: bool, plain: bool = True, votes: bool = True):  # noqa: ANN201
        """(verify, geometry, partners) for find_groups over records whose ids index `paths`; without `crop`, every
        readable pair has alignment 0 (only plainness and geometry decide); without `plain`, no picture counts as
        plain; without `votes` (or `local`), no keypoint candidates."""
        thumbs = self._memo(folder_thumbnails(self.images, paths), self._thumb, paths, "thumbnails", "pictures_thumb")
        feats = self._memo(folder_features(self.images, paths), self._feat, paths, "features", "pictures_features")

        def verify(src: np.ndarray, dst: np.ndarray) -> PairEvidence:
            keys = [tuple(sorted((paths[a], paths[b]))) for a, b in zip(src.tolist(), dst.tolist(), strict=True)]
            todo = [k for k in dict.fromkeys(keys) if k not in self._evidence]
            if todo:
                ids = {p: i for i, p in enumerate(paths)}
                s, d = np.array([ids[a] for a, _ in todo]), np.array([ids[b] for _, b in todo])
                for a, b in zip(s.tolist(), d.tolist(), strict=True):  # decode first: the timing is the alignment
                    thumbs(a), thumbs(b)
                t = time.perf_counter()
                ev = thumbnail_evidence(thumbs, s, d)
                self.seconds["alignment"] += time.perf_counter() - t
                self.counts["pairs_aligned"] += len(todo)
                self._evidence.update(
                    zip(todo, zip(ev.alignment.tolist(), ev.plain.tolist(), strict=True), strict=True)
                )
            got = [self._evidence[k] for k in keys]
            alignment = np.array([a for a, _ in got], dtype=np.float32)
            if not crop:
                alignment = np.where(np.isnan(alignment), np.nan, 0.0).astype(np.float32)
            return PairEvidence(alignment, np.array([b and plain for _, b in got], dtype=bool))

        def geometry(src: np.ndarray, dst: np.ndarray) -> GeometryEvidence:
            keys = [tuple(sorted((paths[a], paths[b]))) for a, b in zip(src.tolist(), dst.tolist(), strict=True)]
            todo = [k for k in dict.fromkeys(keys) if k not in self._geometry]
            if todo:
                ids = {p: i for i, p in enumerate(paths)}
                s, d = np.array([ids[a] for a, _ in todo]), np.array([ids[b] for _, b in todo])
                for a, b in zip(s.tolist(), d.tolist(), strict=True):
                    feats(a), feats(b)
                t = time.perf_counter()
                got = feature_geometry(feats, s, d)
                self.seconds["matching"] += time.perf_counter() - t
                self.counts["pairs_matched"] += len(todo)
                for e, k in enumerate(todo):
                    one = GeometryEvidence.none(1).filled(np.ones(1, dtype=bool), _row(got, e))
                    self._geometry[k] = one
            rows = [self._geometry[k] for k in keys]
            out = GeometryEvidence.none(len(rows))
            return out.filled(np.ones(len(rows), dtype=bool), _stack(rows)) if rows else out

        def partners(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            key = (tuple(paths), *(getattr(feature_votes, c) for c in VOTE_CONSTANTS))
            if key not in self._votes:
                for i in ids.tolist():
                    feats(i)
                t = time.perf_counter()
                self._votes[key] = feature_votes.vote_pairs(feats, ids.tolist())
                self.seconds["votes"] += time.perf_counter() - t
                self.counts["pictures_voting"] += ids.size
                self.counts["pairs_voted"] += self._votes[key][0].size
            return self._votes[key]

        return verify, (geometry if local else None), (partners if local and votes else None)


def _row(g: GeometryEvidence, e: int) -> GeometryEvidence:
    return GeometryEvidence(
        g.inliers[e : e + 1],
        g.contained[e : e + 1],
        g.agreement[e : e + 1],
        g.spread[e : e + 1],
        [g.points[e]],
        g.asked[e : e + 1],
        g.scale[e : e + 1],  # type: ignore[index]
        g.conflict[e : e + 1],  # type: ignore[index]
        g.share[e : e + 1],  # type: ignore[index]
    )


def _stack(rows: list[GeometryEvidence]) -> GeometryEvidence:
    return GeometryEvidence(
        np.concatenate([r.inliers for r in rows]),
        np.concatenate([r.contained for r in rows]),
        np.concatenate([r.agreement for r in rows]),
        np.concatenate([r.spread for r in rows]),
        [r.points[0] for r in rows],
        np.concatenate([r.asked for r in rows]),
        np.concatenate([r.scale for r in rows]),  # type: ignore[misc]
        np.concatenate([r.conflict for r in rows]),  # type: ignore[misc]
        np.concatenate([r.share for r in rows]),  # type: ignore[misc]
    )


# (crop alignment, local features, plain pictures need geometry, keypoint votes, constants of
# retrieval.dedup.verify.rule)
BEFORE = {"VERIFY_BELOW": 0.26, "ALIGN_BELOW": 0.26}  # the rule before issue 16: alignment promotes down to t - 0.26
VARIANTS = {
    "no verification": None,
    "crop alignment, rule before issue 16": (True, False, False, False, BEFORE),
    "crop alignment": (True, False, True, False, {}),
    "local features, no keypoint candidates": (False, True, True, False, {}),
    "crop alignment + local features, no keypoint candidates": (True, True, True, False, {}),
    "local features": (False, True, True, True, {}),
    "crop alignment + local features (default)": (True, True, True, True, {}),
}
DEFAULT_VARIANT = "crop alignment + local features (default)"
VOTE_CONSTANTS = ("VOTE_FEATURES", "VOTE_NEIGHBOURS", "VOTE_DISTANCE", "MIN_VOTES", "VOTE_PARTNERS")


def groups_at(
    index: SearchIndex, pairs: FolderPairs, threshold: float, variant: str, **extra: float
) -> list[list[str]]:
    spec = VARIANTS[variant]
    paths = [r.path for r in index.records]
    verify = geometry = partners = None
    values: dict[str, float] = dict(extra)
    if spec is not None:
        crop, local, plain, votes, rule = spec
        verify, geometry, partners = pairs.checks(paths, crop, local, plain, votes)
        values = {**rule, **values}
    with ExitStack() as stack:
        stack.enter_context(patched(**values))
        checks = None if verify is None else PairChecks(verify, geometry, partners)
        found = find_groups(index.records, index.vectors, GroupingConfig(threshold), checks=checks)
    return [[g.keep.path] + [d.record.path for d in g.duplicates] for g in found]


def by_edit(groups: list[list[str]], truth: dict) -> dict[str, list[int]]:
    """{edit kind or 'n edits': [copies found in their original's group, copies]}."""
    group_of = {p: n for n, g in enumerate(groups) for p in g}
    out: dict[str, list[int]] = {}
    for g in truth["groups"]:
        for copy in g[1:]:
            found = copy in group_of and group_of.get(g[0]) == group_of[copy]
            kinds = truth["edits"][copy]
            for key in [*kinds, f"{len(kinds)} edit{'s' if len(kinds) > 1 else ''}"]:
                cell = out.setdefault(key, [0, 0])
                cell[0] += found
                cell[1] += 1
    return out


def false_pairs(groups: list[list[str]], truth: dict) -> dict[str, int]:
    """False pairs by what they involve: a distractor kind, else 'two planted groups'."""
    true = pairs_of(truth["groups"])
    out: dict[str, int] = {}
    for p in pairs_of(groups) - true:
        kinds = sorted({truth["distractors"][x] for x in p if x in truth["distractors"]})
        key = " + ".join(kinds) if kinds else "two planted groups"
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("--work", type=Path, default=Path("/tmp/dedup-family"))
    ap.add_argument("--budget", type=float, default=8.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reuse", action="store_true", help="keep the encoder a previous run trained in WORK/run")
    ap.add_argument(
        "--rule-only",
        action="store_true",
        help="only the trained encoder, with and without verification, and the sweeps of the duplicate rule's"
        " constants (retrieval/dedup/verify/rule.py); writes bench/results/dedup_rule.json and .md",
    )
    a = ap.parse_args()
    info = machine_info()
    if not all((a.work / f / "truth.json").exists() for f in FOLDERS):
        build(a.src, a.work, a.seed)
    truths = {f: json.loads((a.work / f / "truth.json").read_text()) for f in FOLDERS}
    run_dir = a.work / "run"
    if not (a.reuse and (run_dir / "encoder.json").exists()):
        run("train", str(a.work / "tuning" / "images"), "--out", str(run_dir), "--preset", "copy-detection",
            "--time-budget", str(a.budget), "--device", "cpu", "--no-resume")  # fmt: skip
    steps = last_step(read_metrics(run_dir))
    random_dir = a.work / "random-init"
    spec = read_spec(run_dir)
    save_random_encoder(
        random_dir, spec.arch, spec.embed_size, dim=0, seed=0, preprocessing=PRESET_PREPROCESSING["copy-detection"]
    )
    encoders = {"trained": run_dir, "random init": random_dir}
    t = THRESHOLD_PRESETS["default"]
    if a.rule_only:
        rule_only(a, truths, run_dir, t, info, steps)
        return
    result: dict = {"machine": info, "train_steps": steps, "budget_min": a.budget, "threshold": t, "folders": {}}
    for f in FOLDERS:
        images, truth = a.work / f / "images", truths[f]
        pairs = FolderPairs(images)
        out: dict = {
            "files": sum(1 for p in images.rglob("*") if p.is_file()),
            "originals": len(truth["groups"]),
            "copies": len(truth["edits"]),
            "true_pairs": len(pairs_of(truth["groups"])),
            "encoders": {},
        }
        for name, enc in encoders.items():
            index_dir = a.work / f"index-{f}-{name.replace(' ', '-')}"
            if not (index_dir / "manifest.json").exists():
                run("index", str(images), "--model", str(enc), "--index", str(index_dir), "--rebuild")
            index = SearchIndex.open(index_dir)
            cell: dict = {"variants": {}}
            for v in VARIANTS:
                cell["variants"][v] = pairwise_prf(groups_at(index, pairs, t, v), truth["groups"])
            default = DEFAULT_VARIANT
            if name == "trained":
                g = groups_at(index, pairs, t, default)
                cell["by_edit"] = by_edit(g, truth)
                cell["false_pairs"] = false_pairs(g, truth)
                cell["false_pairs_no_verify"] = false_pairs(groups_at(index, pairs, t, "no verification"), truth)
                sweeps = {"threshold": ("t", THRESHOLDS), "MIN_INLIERS": (None, INLIERS)}
                sweeps |= {"STRONG_INLIERS": (None, STRONG), "MIN_CONTAINED": (None, CONTAINED)}
                sweeps |= {"ALIGN_BELOW": (None, ALIGN_BELOW), "VERIFY_BELOW": (None, VERIFY_BELOW)}
                sweeps |= {"LOW_PARTNERS": (None, LOW_PARTNERS), "VOTE_PARTNERS": (None, VOTE_PARTNERS)}
                sweeps |= {"MIN_VOTES": (None, MIN_VOTES)}
                sweeps |= {"MIN_AGREEMENT": (None, MIN_AGREEMENT), "MAX_SCALE": (None, MAX_SCALE)}
                sweeps |= {"MAX_CONFLICT": (None, MAX_CONFLICT), "MIN_SPREAD": (None, MIN_SPREAD)}
                cell["sweeps"] = {}
                for setting, (kind, values) in sweeps.items():
                    cell["sweeps"][setting] = {
                        str(x): pairwise_prf(
                            groups_at(index, pairs, x, default)
                            if kind == "t"
                            else groups_at(index, pairs, t, default, **{setting: x}),
                            truth["groups"],
                        )
                        for x in values
                    }
            out["encoders"][name] = cell
            print(f, name, {v: round(m["f1"], 3) for v, m in cell["variants"].items()}, flush=True)
        ph, _ = phash_groups(images, 10)
        out["phash"] = pairwise_prf(ph, truth["groups"])
        out["cost"] = {"seconds": pairs.seconds, "counts": pairs.counts}
        result["folders"][f] = out
    publish("dedup_family", result, markdown(result, a))


RULE_SWEEPS = {
    "threshold": THRESHOLDS,
    "MIN_AGREEMENT": MIN_AGREEMENT,
    "MAX_CONFLICT": MAX_CONFLICT,
    "MIN_SPREAD": MIN_SPREAD,
    "MAX_SCALE": MAX_SCALE,
    "STRONG_INLIERS": STRONG,
    "OVERLAP_INLIERS": [40, 100, 200, 10**9],
}
# joint settings of the overlap check: (MIN_AGREEMENT, MAX_CONFLICT, OVERLAP_INLIERS)
RULE_GRID = [(a, c, n) for a in (0.4, 0.5) for c in (0.5, 0.6) for n in (100, 10**9)]
NO_OVERLAP = {"MIN_AGREEMENT": 0.0, "MAX_CONFLICT": 1.0, "MIN_SPREAD": 0.0, "MAX_SCALE": 1e9}


def rule_only(a: argparse.Namespace, truths: dict, run_dir: Path, t: float, info: dict, steps: int) -> None:
    """The duplicate rule of issue 27 on both folders: P/R/F1 at the default, without the aligned-overlap check,
    without verification, the similar pairs, and one constant swept at a time (the tuning folder chooses)."""
    result: dict = {"machine": info, "train_steps": steps, "budget_min": a.budget, "threshold": t, "folders": {}}
    for f in FOLDERS:
        images, truth = a.work / f / "images", truths[f]
        index_dir = a.work / f"index-{f}-trained"
        if not (index_dir / "CURRENT").exists():
            run("index", str(images), "--model", str(run_dir), "--index", str(index_dir), "--rebuild")
        index = SearchIndex.open(index_dir)
        pairs = FolderPairs(images)
        t0 = time.perf_counter()
        default = groups_at(index, pairs, t, DEFAULT_VARIANT)
        seconds = time.perf_counter() - t0
        out: dict = {
            "files": len(index),
            "true_pairs": len(pairs_of(truth["groups"])),
            "default": pairwise_prf(default, truth["groups"]),
            "seconds_default_first_run": seconds,
            "no_overlap_check": pairwise_prf(
                groups_at(index, pairs, t, DEFAULT_VARIANT, **NO_OVERLAP), truth["groups"]
            ),
            "no_verification": pairwise_prf(groups_at(index, pairs, t, "no verification"), truth["groups"]),
            "false_pairs": false_pairs(default, truth),
            "by_edit": by_edit(default, truth),
            "sweeps": {},
        }
        for setting, values in RULE_SWEEPS.items():
            out["sweeps"][setting] = {
                str(x): pairwise_prf(
                    groups_at(index, pairs, x, DEFAULT_VARIANT)
                    if setting == "threshold"
                    else groups_at(index, pairs, t, DEFAULT_VARIANT, **{setting: x}),
                    truth["groups"],
                )
                for x in values
            }
        out["grid"] = {
            f"{ag} {co} {n}": pairwise_prf(
                groups_at(index, pairs, t, DEFAULT_VARIANT, MIN_AGREEMENT=ag, MAX_CONFLICT=co, OVERLAP_INLIERS=n),
                truth["groups"],
            )
            for ag, co, n in RULE_GRID
        }
        out["cost"] = {"seconds": pairs.seconds, "counts": pairs.counts}
        result["folders"][f] = out
        print(f, {k: round(out[k]["f1"], 3) for k in ("default", "no_overlap_check", "no_verification")}, flush=True)
    publish("dedup_rule", result, rule_markdown(result, a))


def rule_markdown(r: dict, a: argparse.Namespace) -> str:
    tu, ho = r["folders"]["tuning"], r["folders"]["heldout"]
    m = r["machine"]
    lines = [
        "## The duplicate rule of issue 27 on the near-duplicate family (bench/dedup/family.py --rule-only)",
        "",
        f"`python -m bench.dedup.family ~/.cache/retrieval-datasets --budget {r['budget_min']:g} --rule-only`"
        + (" --reuse" if a.reuse else "")
        + f" on {m['cpus']} CPU cores (shared, load {m['load_avg_at_start'][0]:.1f} at the start), no GPU; encoder: "
        f"`retrieval train --preset copy-detection` on the tuning folder only ({r['train_steps']} steps). "
        "Folders as in the section above (tuning: mate-backgrounds, ukui-wallpapers and clip art; held out: "
        "lomiri-wallpapers and other clip-art categories). Every near pair is checked against its pictures (no "
        "score bypass); a keypoint match also needs its aligned overlap to agree (retrieval/dedup/verify/rule.py).",
        "",
        "| rule | tuning: P / R / F1 | held out: P / R / F1 |",
        "|---|---|---|",
        f"| default (overlap checked) | {_prf(tu['default'])} | {_prf(ho['default'])} |",
        "| keypoint match without the overlap check | "
        f"{_prf(tu['no_overlap_check'])} | {_prf(ho['no_overlap_check'])} |",
        f"| no verification | {_prf(tu['no_verification'])} | {_prf(ho['no_verification'])} |",
        "",
        f"False pairs at the default, by what they involve: tuning {tu['false_pairs']}, held out {ho['false_pairs']}.",
        f"Verification wall time of the first run (pictures read, thumbnails, keypoints, matching): tuning "
        f"{tu['seconds_default_first_run']:.0f} s for {tu['files']} files, held out "
        f"{ho['seconds_default_first_run']:.0f} s for {ho['files']} files; pairs aligned / matched: tuning "
        f"{tu['cost']['counts']['pairs_aligned']} / "
        f"{tu['cost']['counts']['pairs_matched']}, held out {ho['cost']['counts']['pairs_aligned']} / "
        f"{ho['cost']['counts']['pairs_matched']}.",
        "",
        "One constant swept at a time (tuning F1 / held-out F1; the tuning folder chooses, the held-out one is shown):",
        "",
    ]
    for setting, values in tu["sweeps"].items():
        cells = [f"{x}: {v['f1']:.3f} / {ho['sweeps'][setting][x]['f1']:.3f}" for x, v in values.items()]
        lines.append(f"- {setting}: " + ", ".join(cells))
    lines.append("")
    lines.append("Joint settings (MIN_AGREEMENT, MAX_CONFLICT, OVERLAP_INLIERS): tuning F1 / held-out F1:")
    lines.append("")
    lines += [f"- {k}: {v['f1']:.3f} / {ho['grid'][k]['f1']:.3f}" for k, v in tu["grid"].items()]
    lines.append("")
    lines.append(
        "Recall per edit kind at the default (found / copies), held out: "
        + ", ".join(f"{k} {v[0]}/{v[1]}" for k, v in sorted(ho["by_edit"].items()))
    )
    return "\n".join(lines) + "\n"


def _prf(m: dict) -> str:
    return f"{m['precision']:.3f} / {m['recall']:.3f} / {m['f1']:.3f}"


def markdown(r: dict, a: argparse.Namespace) -> str:
    tu, ho = r["folders"]["tuning"], r["folders"]["heldout"]
    m = r["machine"]
    lines = [
        "## Near duplicates on photo sources never tuned on (bench/dedup/family.py)",
        "",
        f"`python -m bench.dedup.family ~/.cache/retrieval-datasets --budget {r['budget_min']:g}`"
        + (" --reuse" if a.reuse else "")
        + f" on {m['cpus']} CPU cores (avx512_bf16, no AMX; shared and noisy, load {m['load_avg_at_start'][0]:.1f} "
        "at the start), no GPU.",
        f"Folders (bench/kit/neardup_family.py): tuning = photos of {', '.join(p.rstrip('-') for p in TUNING_PHOTOS)} "
        f"and clip art, {tu['files']} files, {tu['originals']} originals, {tu['copies']} copies, "
        f"{tu['true_pairs']} true pairs; held out = photos of {', '.join(p.rstrip('-') for p in HELDOUT_PHOTOS)} "
        f"and other clip-art categories, {ho['files']} files, {ho['originals']} originals, {ho['copies']} copies, "
        f"{ho['true_pairs']} true pairs. Copies carry 1-3 edits with strengths drawn from ranges (in-frame "
        "rotation 1-15 degrees, crops to 40-85% of the area anywhere, captions, stickers, watermarks, screenshots "
        "in app chrome, colour filters, perspective, resize, JPEG 20-80); distractors are burst shots and other "
        "angles of photo originals, simple drawings, nearly blank pictures and other clip art.",
        f"Encoder: `retrieval train --preset copy-detection --time-budget {r['budget_min']:g}` on the tuning folder "
        f"only ({r['train_steps']} steps); random init: the same architecture and preprocessing, untrained. Every "
        "constant is chosen on the tuning folder; the held-out folder chose nothing.",
        "",
        f"Pairwise precision / recall / F1 at the default threshold ({r['threshold']}):",
        "",
        "| method | tuning: P / R / F1 | held out: P / R / F1 |",
        "|---|---|---|",
    ]
    for enc in ("trained", "random init"):
        for v in tu["encoders"][enc]["variants"]:
            cells = [_prf(c["encoders"][enc]["variants"][v]) for c in (tu, ho)]
            lines.append(f"| {enc}, {v} | {cells[0]} | {cells[1]} |")
    lines.append(f"| imagededup PHash (distance 10) | {_prf(tu['phash'])} | {_prf(ho['phash'])} |")
    tt, ht = tu["encoders"]["trained"], ho["encoders"]["trained"]
    d = DEFAULT_VARIANT
    f_tu, f_ho = tt["variants"][d]["f1"], ht["variants"][d]["f1"]
    best_t, best_f = max(((float(x), c["f1"]) for x, c in tt["sweeps"]["threshold"].items()), key=lambda p: p[1])
    lines += [
        "",
        f"Goal (issue 16): held-out F1 >= 0.90 and within 0.03 of the tuning F1. Measured, trained encoder: held out "
        f"{f_ho:.3f}, tuning {f_tu:.3f} (difference {f_ho - f_tu:+.3f}): "
        + ("the level is met" if f_ho >= 0.9 else "the level is not met")
        + (", the gap is met." if abs(f_ho - f_tu) <= 0.03 else ", the gap is not met.")
        + " PHash on the held-out folder: "
        f"{ho['phash']['f1']:.3f}. The rows: `no verification` is `--no-verify`; `crop alignment, rule before issue "
        "16` is the crop verifier deciding every pair from 0.26 under the threshold to 0.12 over it, plain pictures "
        "not singled out; `crop alignment` is today's rule without local features; `local features` is today's "
        "rule with alignment never counting; `no keypoint candidates` leaves out the pairs keypoint votes propose "
        "(retrieval/dedup/candidates/feature_votes.py) and the choice of centre by inliers; the default uses all of it "
        "(retrieval/dedup/groups.py: a pair within ALIGN_BELOW under the threshold to VERIFY_ABOVE over it is kept "
        "when it lines up or its keypoints match; further under it, and for every pair keypoint votes propose "
        "whatever its score, only on STRONG_INLIERS keypoints; a pair with a plain picture only on its keypoints; a "
        "file two group centres could claim joins the one it shares more inliers with). Every constant is the "
        "tuning-best of its sweep below or tied with it, ties going to the more cautious value (STRONG_INLIERS 15 "
        "over 12, ALIGN_BELOW 0 over 0.05; the local-feature constants that need a fresh process: "
        "bench/dedup/family_grid.py; LOW_PARTNERS, tied here, chosen on the seed-0 benchmark folder of "
        "bench/dedup/quality.py, where clip art that shares a part, checked far under the threshold, made false "
        "pairs: retrieval/dedup/groups.py gives the figures), except the threshold preset, chosen on "
        "the seed-1 benchmark folder (bench/dedup/threshold.py): on these tuning sources "
        f"{best_t:g} would do {best_f - f_tu:.3f} better. The dedup_threshold section above was measured with the "
        "rule before issue 16.",
    ]
    for name, title in (
        ("threshold", "threshold"),
        ("MIN_INLIERS", "MIN_INLIERS (local features match)"),
        ("STRONG_INLIERS", "STRONG_INLIERS (may promote a pair far under the threshold)"),
        ("MIN_CONTAINED", "MIN_CONTAINED (share of one frame the similarity maps inside the other)"),
        ("ALIGN_BELOW", "ALIGN_BELOW (how far under the threshold alignment may promote)"),
        ("VERIFY_BELOW", "VERIFY_BELOW (how far under the threshold pairs are candidates, for local features)"),
        ("LOW_PARTNERS", "LOW_PARTNERS (best-scoring partners per file checked far under the threshold)"),
        ("VOTE_PARTNERS", "VOTE_PARTNERS (most-voted partners per file proposed by keypoint votes)"),
        ("MIN_VOTES", "MIN_VOTES (votes a proposed partner needs)"),
    ):
        lines += ["", f"Trained encoder, default verification, one setting swept: {title}", ""]
        lines += ["| value | tuning: P / R / F1 | held out: P / R / F1 |", "|---|---|---|"]
        for x, cell in tt["sweeps"][name].items():
            lines.append(f"| {x} | {_prf(cell)} | {_prf(ht['sweeps'][name][x])} |")
    lines += [
        "",
        "Share of copies found in their original's group at the default (trained encoder; a copy counts under each "
        "of its edits and under its number of edits):",
        "",
        "| edit | tuning | held out |",
        "|---|---|---|",
    ]
    for k in sorted(set(tt["by_edit"]) | set(ht["by_edit"])):
        cells = [c["by_edit"].get(k, [0, 0]) for c in (tt, ht)]
        lines.append(f"| {k} | " + " | ".join(f"{x / n:.2f} ({n})" if n else "-" for x, n in cells) + " |")
    lines += ["", "False pairs at the default by what they involve (trained encoder):", ""]
    lines += [
        "| involves | tuning, verified | tuning, no verification | held out, verified | held out, no verification |"
    ]
    lines += ["|---|---|---|---|---|"]
    keys = sorted(set().union(*(c[k] for c in (tt, ht) for k in ("false_pairs", "false_pairs_no_verify"))))
    for k in keys:
        cells = [c[f].get(k, 0) for c in (tt, ht) for f in ("false_pairs", "false_pairs_no_verify")]
        lines.append(f"| {k} | " + " | ".join(str(x) for x in cells) + " |")
    lines += ["", "Cost of the checks (all pairs any variant asked about, each once; the files read from disk):", ""]
    lines += [
        "| folder | thumbnails (decode) | crop alignment | ORB features (decode + detect) | feature matching + RANSAC "
        "| keypoint votes |"
    ]
    lines += ["|---|---|---|---|---|---|"]
    for f, c in (("tuning", tu), ("held out", ho)):
        s, n = c["cost"]["seconds"], c["cost"]["counts"]

        def per(x: float, k: int) -> str:
            return f"{1000 * x / max(1, k):.1f} ms x {k}"

        cells = [
            per(s["thumbnails"], n["pictures_thumb"]) + " pictures",
            per(s["alignment"], n["pairs_aligned"]) + " pairs",
            per(s["features"], n["pictures_features"]) + " pictures",
            per(s["matching"], n["pairs_matched"]) + " pairs",
            per(s["votes"], n["pictures_voting"]) + f" pictures ({n['pairs_voted']} pairs proposed)",
        ]
        lines.append(f"| {f} | " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
