"""Geometric verification (retrieval.dedup.verify.align) and its use by find_groups / find_duplicates: a picture and
its crops, resized or mirrored copies line up; unrelated and flat pictures do not; the band rule keeps and
drops exactly the planted pairs."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from retrieval.dedup.run import DedupConfig, find_duplicates
from retrieval.dedup.threshold import Threshold
from retrieval.dedup.verify import align as verify
from retrieval.dedup.verify.align import alignment, alignments, canonical_thumbnail
from retrieval.dedup.verify.pair_reads import PairEvidence, is_plain, thumbnail_evidence
from retrieval.dedup.verify.rule import (
    ALIGN_BELOW,
    MIN_ALIGNMENT,
    MIN_CONTAINED,
    MIN_INLIERS,
    STRONG_INLIERS,
    VERIFY_BELOW,
)
from retrieval.records import FileRecord
from tests.retrieval.conftest import crop, scene
from tests.retrieval.dedup.grouping import groups_of

pytestmark = pytest.mark.usefixtures("one_thread")


def thumb(im: Image.Image) -> np.ndarray:
    return canonical_thumbnail(im)


@pytest.mark.parametrize(
    "edit",
    [
        lambda im: im,
        lambda im: im.resize((90, 140)),  # aspect change
        lambda im: crop(im, (0.1, 0.05, 0.9, 0.85)).resize((100, 100)),  # 20% cropped, then squashed
        lambda im: crop(im, (0.0, 0.2, 0.75, 1.0)),  # a corner crop
        lambda im: ImageOps.mirror(crop(im, (0.1, 0.1, 0.95, 0.9))),
        lambda im: ImageOps.grayscale(im).convert("RGB").point(lambda v: v // 2 + 60),  # grey, less contrast
        lambda im: ImageOps.expand(im, border=12, fill=(0, 0, 0)),  # a frame (trimmed)
    ],
    ids=["same", "aspect", "crop", "corner-crop", "mirrored-crop", "grey", "frame"],
)
def test_copies_line_up_both_ways(edit):
    original = scene(1)
    copy = edit(original)
    a, b = thumb(original), thumb(copy)
    assert alignment(a, b) >= 0.9
    assert alignment(b, a) == pytest.approx(alignment(a, b))  # the score takes both directions


def test_unrelated_and_flat_pictures_do_not_line_up():
    a = thumb(scene(1))
    for seed in range(2, 8):
        assert alignment(a, thumb(scene(seed))) < MIN_ALIGNMENT
    flat = thumb(Image.new("RGB", (64, 64), (200, 30, 30)))
    assert alignment(a, flat) == 0.0  # a flat picture has no pattern to match
    assert alignment(flat, flat) == 0.0


def layout_with_texture(stripes: str, n: int = 96) -> Image.Image:
    """One smooth light layout (a bright blob) with faint stripes across it, horizontal or vertical."""
    y, x = np.mgrid[0:n, 0:n] / n
    blob = np.exp(-((x - 0.4) ** 2 + (y - 0.55) ** 2) / 0.08)
    g = blob + 0.2 * (np.floor((y if stripes == "h" else x) * 24) % 2)
    g = (g - g.min()) / (g.max() - g.min()) * 255
    return Image.fromarray(g.astype(np.uint8)).convert("RGB")


def test_same_light_layout_with_other_details_does_not_line_up(monkeypatch):
    """Grey levels follow the smooth layout, which the two pictures share (their correlation alone passes
    MIN_ALIGNMENT); their edges (the stripes) run across each other, so the edge check rejects the crop."""
    h, v = thumb(layout_with_texture("h")), thumb(layout_with_texture("v"))
    assert alignment(h, v) == 0.0
    assert alignment(h, thumb(layout_with_texture("h").resize((80, 110)))) >= 0.9  # a copy still lines up
    monkeypatch.setattr(verify, "MIN_EDGE_CORRELATION", -1.0)  # grey levels alone
    assert alignment(h, v) >= MIN_ALIGNMENT


def test_edge_correlations_ignore_brightness_and_contrast():
    """Analytic: gradient magnitudes of a * x + b are a times those of x, so they correlate exactly 1; a
    picture turned a quarter (its edges elsewhere) correlates less."""
    rng = np.random.default_rng(0)
    side = verify.COMPARE_SIDE
    x = torch.from_numpy(rng.random((side, side), dtype=np.float32))
    target = verify._unit((0.5 * x + 0.2).flatten()[None])  # as whole_of gives it: a unit row
    got = verify.edge_correlations(torch.stack([x, x.rot90(1)]), target.expand(2, -1))
    assert got[0].item() == pytest.approx(1.0, abs=1e-5)
    assert got[1].item() < 0.5


def test_alignments_pairs_and_unreadable_pictures():
    thumbs = [thumb(scene(1)), thumb(crop(scene(1), (0.1, 0.1, 0.9, 0.9))), thumb(scene(3)), None]
    src, dst = np.array([0, 2, 1, 3]), np.array([1, 0, 2, 0])
    got = alignments(lambda i: thumbs[i], src, dst)
    for e in range(3):
        assert got[e] == pytest.approx(alignment(thumbs[src[e]], thumbs[dst[e]]), abs=1e-6)
    assert np.isnan(got[3])  # a picture that could not be read is not verified
    assert alignments(thumbs[:3], np.array([], dtype=np.int64), np.array([], dtype=np.int64)).shape == (0,)


def record(i: int) -> FileRecord:
    return FileRecord(i, f"{i}.jpg", 10, 0, hashlib.sha256(str(i).encode()).hexdigest(), 100 - i, 100)


def planted_cosines(scores: dict[int, float], n: int) -> np.ndarray:
    """(n, 512) unit rows whose cosine to row 0 is scores[k] (background_rank 0: the score is the cosine)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 512)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    base = x[0]
    for k, s in scores.items():
        ortho = x[k] - (x[k] @ base) * base
        ortho /= np.linalg.norm(ortho)
        x[k] = s * base + np.sqrt(1 - s * s) * ortho
    return x


@pytest.mark.parametrize("low_partners", [8, 0])
def test_verification_rule_keeps_and_drops_exactly_the_planted_pairs(low_partners, monkeypatch):
    """Planted scores around threshold t, with an alignment, a plain flag and a local-feature geometry each:
    the score zone decides which evidence counts, and no score is evidence on its own (issue 27). With LOW_PARTNERS 0
    (the default) a pair far under t that no keypoint vote proposed is not checked at all."""
    from retrieval.dedup.verify import rule as dedup

    monkeypatch.setattr(dedup, "LOW_PARTNERS", low_partners)
    t = 0.3
    strong, weak, burst = (STRONG_INLIERS, 1.0), (MIN_INLIERS, 1.0), (STRONG_INLIERS, MIN_CONTAINED - 0.2)
    none = (0, 0.0)
    # pair (0, k): score, alignment (None: unreadable), plain, (inliers, contained), kept
    plan = {
        1: (t + 0.5, 0.0, False, none, False),  # far above t, but nothing in the pictures agrees: not a duplicate
        2: (t + 0.05, 0.2, False, none, False),  # in the band, neither lines up nor matches
        3: (t - ALIGN_BELOW + 0.03, 0.95, False, none, True),  # in the band (from t - ALIGN_BELOW), lines up
        4: (t - VERIFY_BELOW + 0.03, 0.99, False, none, False),  # far under t: alignment alone never promotes
        5: (t - VERIFY_BELOW + 0.03, 0.0, False, strong, low_partners > 0),  # ... strong geometry does
        6: (t - VERIFY_BELOW + 0.03, 0.0, False, weak, STRONG_INLIERS <= MIN_INLIERS),  # a weak match does not
        7: (t + 0.05, 0.2, False, weak, True),  # in the band: a local-feature match is enough
        8: (t + 0.05, 0.2, False, burst, False),  # many inliers, but neither frame inside the other: a burst
        9: (t + 0.5, 0.99, True, none, False),  # a plain picture: a high score and alignment are not enough
        10: (t + 0.5, 0.0, True, strong, True),  # ... matching geometry is
        11: (t + 0.05, None, False, none, False),  # over t, unreadable: nothing vouches for it
        12: (t - 0.05, None, False, none, False),  # under t, unreadable
        13: (t - VERIFY_BELOW - 0.03, 0.99, False, strong, False),  # under the floor: never a candidate
    }
    n = len(plan) + 1
    x = planted_cosines({k: v[0] for k, v in plan.items()}, n)
    verified: list[int] = []
    matched: list[int] = []

    def partner(a: int, b: int) -> int | None:
        return max(a, b) if min(a, b) == 0 else None  # partners are not copies of one another

    def check(src: np.ndarray, dst: np.ndarray) -> PairEvidence:
        alignment, plain = [], []
        for a, b in zip(src.tolist(), dst.tolist(), strict=True):
            k = partner(a, b)
            verified.append(k)
            v = plan[k][1] if k is not None else 0.0
            alignment.append(np.nan if v is None else v)
            plain.append(k is not None and plan[k][2])
        return PairEvidence(np.array(alignment, dtype=np.float32), np.array(plain))

    def geometry(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ks = [partner(a, b) for a, b in zip(src.tolist(), dst.tolist(), strict=True)]
        matched.extend(ks)
        got = [none if k is None else plan[k][3] for k in ks]
        return np.array([g[0] for g in got], dtype=np.int32), np.array([g[1] for g in got], dtype=np.float32)

    groups = groups_of([record(i) for i in range(n)], x, t, verify=check, geometry=geometry)
    assert len(groups) == 1 and groups[0].keep.id == 0
    got = {dup.record.id: dup for dup in groups[0].duplicates}
    assert set(got) == {k for k, v in plan.items() if v[4]}
    assert got[3].alignment == pytest.approx(0.95) and got[3].evidence.check == "alignment"
    assert got[7].evidence.check == "keypoints" and got[7].evidence.inliers == MIN_INLIERS
    assert got[3].score == pytest.approx(plan[3][0], abs=1e-5)  # the reported score stays the score
    assert 13 not in verified and 13 not in matched  # under the floor: nothing to check
    assert 4 not in verified and (4 in matched) == (low_partners > 0)  # far under t: only local features are asked
    assert 1 in verified and 1 in matched  # far above t: checked all the same
    assert 3 not in matched  # lined up: no need for local features
    plain = groups_of([record(i) for i in range(n)], x, t)
    assert {dup.record.id for dup in plain[0].duplicates} == {k for k, v in plan.items() if v[0] >= t}


def test_plain_alignment_far_under_the_threshold_promotes_nothing():
    """Issue 16: two distinct drawings scoring 0.03 and 0.05 against a threshold of 0.28 lined up in grey levels
    and were grouped; without local-feature geometry a pair that far under the threshold stays apart."""
    t = 0.28
    x = planted_cosines({1: 0.03, 2: 0.05}, 3)
    groups = groups_of([record(i) for i in range(3)], x, t, verify=lambda s, d: np.full(s.size, 0.99, np.float32))
    assert groups == []


def test_find_duplicates_verifies_the_indexed_files(planted_index):
    """End to end on real files: exactly the planted copies group with their original, whatever the tiny
    random encoder's scores; --no-verify uses scores alone."""
    index_dir, _ = planted_index
    result = find_duplicates(DedupConfig(index=index_dir, threshold=Threshold(0.3), k=8))
    assert [sorted(r.path for r in g.records) for g in result.groups] == [["a-crop.png", "a-mirror.png", "a.png"]]
    assert all(d.alignment is not None and d.alignment >= MIN_ALIGNMENT for d in result.groups[0].duplicates)
    unverified = find_duplicates(DedupConfig(index=index_dir, threshold=Threshold(0.3), k=8, verify=False))
    assert all(d.alignment is None for g in unverified.groups for d in g.duplicates)


def test_a_file_gone_since_indexing_is_decided_by_its_score(planted_index, caplog):
    """The crop copy is deleted after indexing: its pairs cannot be verified, so the score alone decides
    (as with --no-verify), with one warning; the readable mirror copy is still verified."""
    index_dir, photos = planted_index
    (photos / "a-crop.png").unlink()
    with caplog.at_level("WARNING", logger="retrieval.dedup.groups"):
        groups = find_duplicates(DedupConfig(index=index_dir, threshold=Threshold(0.3), k=8)).groups
    assert any("not verified" in r.getMessage() for r in caplog.records)
    plain = find_duplicates(DedupConfig(index=index_dir, threshold=Threshold(0.3), k=8, verify=False)).groups
    by_score = {p for g in plain for p in (r.path for r in g.records)}  # what the score alone groups
    members = {r.path: g for g in groups for r in g.records}
    assert ("a-crop.png" in members) == ("a-crop.png" in by_score)
    assert "a-mirror.png" in members and "a.png" in members
    assert members["a-mirror.png"] is members["a.png"]


def test_crop_correlations_match_resampling_each_crop_with_grid_sample():
    """Oracle: every crop resampled by torch's grid_sample (bilinear, edges clamped), centred and scaled
    to unit length, then correlated with the target."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (verify.THUMB_SIDE, verify.THUMB_SIDE), dtype=np.uint8)
    b = rng.integers(0, 256, (verify.THUMB_SIDE, verify.THUMB_SIDE), dtype=np.uint8)
    axis = verify._axis_crops()
    theta = torch.tensor([[[sx, 0.0, tx], [0.0, sy, ty]] for (sy, ty), (sx, tx) in itertools.product(axis, axis)])
    side = verify.COMPARE_SIDE
    grid = F.affine_grid(theta, [len(theta), 1, side, side], align_corners=False)
    picture = torch.from_numpy(a).float()[None, None].expand(len(theta), 1, *a.shape) / 255.0
    crops = F.grid_sample(picture, grid, mode="bilinear", padding_mode="border", align_corners=False).flatten(1)
    crops = crops - crops.mean(dim=1, keepdim=True)
    crops = crops / crops.norm(dim=1, keepdim=True)
    targets = verify.whole_of(b)
    assert verify.CROPS == len(theta)
    assert torch.allclose(verify.crop_correlations(a, targets), targets @ crops.T, atol=1e-5)


def plain_drawing(shape: str, fg: tuple[int, int, int], bg: tuple[int, int, int], box: tuple[int, ...]) -> Image.Image:
    from PIL import ImageDraw

    im = Image.new("RGB", (96, 96), bg)
    (ImageDraw.Draw(im).ellipse if shape == "circle" else ImageDraw.Draw(im).rectangle)(box, fill=fg)
    return im


def nearly_blank(level: int, mark: tuple[int, int]) -> Image.Image:
    from PIL import ImageDraw

    im = Image.new("RGB", (96, 96), (level, level, level))
    ImageDraw.Draw(im).ellipse([mark[0], mark[1], mark[0] + 5, mark[1] + 5], fill=(level - 20,) * 3)
    return im


def test_plain_pictures_do_not_group_on_score_or_alignment(tmp_path):
    """Issue 16: a blue circle on yellow and a magenta circle on green, a white wallpaper and a nearly blank
    page line up in grey levels and score high, yet are different pictures; byte-identical copies still group."""
    pictures = [
        plain_drawing("circle", (20, 40, 220), (240, 230, 30), (20, 25, 70, 75)),
        plain_drawing("circle", (220, 30, 200), (30, 200, 60), (30, 20, 80, 70)),
        nearly_blank(255, (10, 60)),
        nearly_blank(250, (70, 20)),
    ]
    thumbs = [thumb(p) for p in pictures]
    assert all(is_plain(t) for t in thumbs) and not is_plain(thumb(scene(1)))
    assert alignment(thumbs[0], thumbs[1]) >= MIN_ALIGNMENT  # what let them through before
    n = len(pictures) + 1
    recs = [record(i) for i in range(n - 1)] + [dataclasses.replace(record(n - 1), content_hash=record(2).content_hash)]
    x = planted_cosines({1: 0.95, 2: 0.2, 3: 0.2}, n)
    x[3] = x[2] * 0.9 + x[0] * 0.1  # the two blank pictures score high with each other
    x[3] /= np.linalg.norm(x[3])
    x[4] = x[2]  # the same bytes as picture 2
    every = [*thumbs, thumbs[2]]
    groups = groups_of(recs, x, 0.3, verify=lambda s, d: thumbnail_evidence(lambda i: every[i], s, d))
    assert [(g.keep.id, [d.record.id for d in g.duplicates]) for g in groups] == [(2, [4])]
    assert groups[0].duplicates[0].kind == "exact"


def test_far_under_the_threshold_only_each_files_best_partners_are_matched():
    """_best_partners against brute force: a pair is kept when it is among the m best of either of its files."""
    from retrieval.dedup.verify.rule import _best_partners

    rng = np.random.default_rng(0)
    src, dst, score = rng.integers(0, 20, 300), rng.integers(0, 20, 300), rng.random(300)
    expected = np.zeros(300, dtype=bool)
    for end in (src, dst):
        for v in np.unique(end):
            rows = np.flatnonzero(end == v)
            expected[rows[np.argsort(-score[rows])[:3]]] = True
    np.testing.assert_array_equal(_best_partners(src, dst, score, 3), expected)
