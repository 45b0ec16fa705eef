"""Descriptor levers scored on trained encoders without training again (issue 29): test-time averaging of the
descriptor over rescalings and crops (moco.augment.tta), and GeM of layer3 and layer4 side by side
(moco.backbone.RetrievalEncoder), each against the plain descriptor of the same weights and against a random-init
network given the same descriptor. Scored as bench.training.learning_curve scores (clip-art precision@10, kNN top-1,
MAP@R, emoji recall@10), with the embedder's img/s (what each extra view costs at index and query time).

    python -m bench.training.descriptor_levers --encoder runs/A --encoder runs/B [--clip-every 8] [--tag NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.kit.machine import machine_info
from bench.kit.results import publish
from bench.training.learning_curve import DATA, Scorer, public

VARIANTS: dict[str, dict] = {  # EncoderSpec changes
    "plain (GeM of layer4; flip-averaged)": {},
    "scales 1 + 0.5": {"test_time_scales": (1.0, 0.5)},
    "scales 1 + 1.5": {"test_time_scales": (1.0, 1.5)},
    "5 crops + full": {"test_time_crops": 5},
    "layer3 + layer4": {"pooled": "layer3+layer4"},
}


def score_variants(scorer: Scorer, encoder: Path, work: Path, emoji: bool, variants: dict[str, dict]) -> list[dict]:
    """One row per descriptor variant of `encoder`; p10_vs_first / p10_noise: precision@10 minus the first variant's
    (the plain descriptor) and two paired standard errors of that difference (the same queries)."""
    from moco.backbone import pooled_dim
    from moco.export import export_descriptor_variant, read_spec
    from moco.measure.verdict import FirstPage

    spec = read_spec(encoder)
    rows, first = [], None
    for name, changes in variants.items():
        out = work / f"{encoder.parent.name}-{encoder.name}-{len(rows)}"
        if changes.get("pooled"):
            changes = {**changes, "embedding_dim": pooled_dim(spec.arch, spec.width, changes["pooled"])}
        export_descriptor_variant(encoder, out, **changes)
        scores = scorer.score(out, emoji)
        first = first or scores
        page = FirstPage(tuple(scores["_first_page"]), tuple(first["_first_page"]))
        row = {"encoder": str(encoder), "variant": name, "changes": changes, **public(scores)}
        row |= {"p10_vs_first": page.precision - page.random_precision, "p10_noise": page.noise}
        print(json.dumps(row), file=sys.stderr, flush=True)
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--encoder", type=Path, action="append", default=[], help="trained encoder folders")
    ap.add_argument("--clip-every", type=int, default=8)
    ap.add_argument("--emoji-every", type=int, default=6)
    ap.add_argument("--no-emoji", action="store_true")
    ap.add_argument("--variants", default="", help="'|'-separated names of VARIANTS (default: all)")
    ap.add_argument("--tag", default="descriptor_levers")
    a = ap.parse_args()
    torch.set_num_threads(1)
    from moco.export import read_spec, save_random_encoder

    wanted = [v.strip() for v in a.variants.split("|") if v.strip()]
    unknown = set(wanted) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variants {sorted(unknown)}: choose from {list(VARIANTS)}")
    variants = {k: v for k, v in VARIANTS.items() if not wanted or k in wanted}
    start, t0 = machine_info(), time.monotonic()
    scorer = Scorer(a.data, a.clip_every, a.emoji_every)
    work = Path(tempfile.mkdtemp(prefix="bench-levers-"))
    rows: list[dict] = []
    randoms: set[tuple] = set()
    for enc in a.encoder:
        spec = read_spec(enc)
        key = (spec.arch, spec.stem, spec.width, spec.embed_size, spec.resize)
        if key not in randoms:  # the random-init network of the same kind, with each descriptor too
            randoms.add(key)
            rnd = work / f"random-{len(randoms)}"
            save_random_encoder(rnd, spec.arch, spec.embed_size, 0, 0, {"resize": spec.resize}, spec.stem, spec.width)
            rows += [{**r, "random_init": True} for r in score_variants(scorer, rnd, work, not a.no_emoji, variants)]
        rows += score_variants(scorer, enc, work, not a.no_emoji, variants)
    result = {
        "benchmark": "descriptor_levers",
        "command": "python -m bench.training.descriptor_levers " + " ".join(sys.argv[1:]),
        "machine": start,
        "load_avg_at_end": list(os.getloadavg()),
        "total_s": time.monotonic() - t0,
        "data": {
            "clipart_scored": len(scorer.clip_paths),
            "knn_queries": len(scorer.test_idx),
            "emoji_pairs": len(scorer.pairs),
        },
        "rows": rows,
    }
    publish(a.tag, result, None, indent=2, newline=True)
    print(table(rows))


def table(rows: list[dict]) -> str:
    lines = [
        "| encoder | descriptor | P@10 | vs plain (noise) | kNN top-1 | MAP@R | emoji R@10 | embed img/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        enc = "random init" if r.get("random_init") else "/".join(Path(r["encoder"]).parts[-2:])
        vs = f"{r['p10_vs_first']:+.3f} (+-{r['p10_noise']:.3f})"
        lines.append(
            f"| {enc} | {r['variant']} | {r['precision_at_10']:.3f} | {vs} | {r['knn_top1']:.3f} | "
            f"{r['map_at_r']:.3f} | {r['emoji_recall_at_10']:.3f} | {r['embed_img_per_s']:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
