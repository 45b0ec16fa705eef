"""Keypoint votes (dedup.candidates.feature_votes) and their use by find_groups: a strong crop and a screenshot
of a picture are proposed as its partners (other pictures in the same style may be too, at most VOTE_PARTNERS
per picture: geometry decides), a flat picture never; a proposed pair far under the threshold groups exactly
when its geometry is strong; a file two centres could claim joins the one it shares more inliers with."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image, ImageDraw

from retrieval.dedup.candidates import feature_votes
from retrieval.dedup.candidates.feature_votes import (
    MAX_DESCRIPTORS,
    MIN_FEATURES,
    VOTE_FEATURES,
    VOTE_PARTNERS,
    vote_pairs,
    voting_share,
)
from retrieval.dedup.verify.pair_reads import PairEvidence
from retrieval.dedup.verify.rule import MIN_CONTAINED, STRONG_INLIERS, VERIFY_BELOW
from tests.retrieval.dedup.grouping import groups_of
from tests.retrieval.dedup.verify.test_local_features import features, texture
from tests.retrieval.dedup.verify.test_verify import record

pytestmark = pytest.mark.usefixtures("one_thread")


def screenshot(im: Image.Image) -> Image.Image:
    """The picture at 60% inside app chrome: a title bar, a side panel, buttons."""
    canvas = Image.new("RGB", (480, 400), (236, 236, 240))
    d = ImageDraw.Draw(canvas)
    d.rectangle([0, 0, 480, 36], fill=(40, 44, 52))
    d.text((12, 12), "Photos - holiday", fill=(255, 255, 255))
    for k in range(5):
        d.rectangle([10, 60 + 40 * k, 90, 88 + 40 * k], fill=(200, 205, 215))
    small = im.resize((int(im.width * 0.6 * 1.5), int(im.height * 0.6 * 1.5)), Image.BICUBIC)
    canvas.paste(small, (120, 60))
    return canvas


@pytest.fixture(scope="module")
def folder() -> list:
    """0: a picture; 1: an off-centre crop of 45% of its area; 2: a screenshot of it; 3-6: other pictures;
    7: a flat picture."""
    original = texture(1)
    w, h = original.size
    cw, ch = int(w * 0.45**0.5), int(h * 0.45**0.5)
    crop = original.crop((w - cw - 10, 5, w - 10, 5 + ch)).resize((cw * 2, ch * 2), Image.BICUBIC)
    pictures = [original, crop, screenshot(original), *(texture(s) for s in range(2, 6))]
    pictures.append(Image.new("RGB", (200, 150), (250, 250, 250)))
    return [features(p) for p in pictures]


def proposed(feats: list, ids: list[int]) -> set[tuple[int, int]]:
    src, dst = vote_pairs(lambda i: feats[i], ids)
    assert (src < dst).all()
    got = set(zip(src.tolist(), dst.tolist(), strict=True))
    assert len(got) <= VOTE_PARTNERS * len(ids)  # each picture proposes its most-voted partners only
    return got


def test_a_crop_and_a_screenshot_are_proposed(folder):
    got = proposed(folder, list(range(len(folder))))
    assert {(0, 1), (0, 2)} <= got
    assert not any(7 in p for p in got)  # the flat picture has no keypoints


def test_the_inverted_file_proposes_them_too(folder, monkeypatch):
    monkeypatch.setattr(feature_votes, "FLAT_UP_TO", 0)  # no exact search: Hamming k-means cells
    got = proposed(folder, list(range(len(folder))))
    assert {(0, 1), (0, 2)} <= got and not any(7 in p for p in got)


def test_only_the_given_ids_vote_and_unreadable_pictures_propose_nothing(folder):
    feats = [*folder[:2], None, *folder[3:]]  # the screenshot could not be read
    got = proposed(feats, [0, 1, 2, 3])
    assert (0, 1) in got and not any(2 in p for p in got) and all(max(p) <= 3 for p in got)
    assert proposed(folder, [7]) == set()


def test_voting_share_keeps_the_index_bounded():
    assert voting_share(1) == voting_share(1000) == VOTE_FEATURES
    many = MAX_DESCRIPTORS // 100
    assert voting_share(many) == 100 and voting_share(many) * many <= MAX_DESCRIPTORS
    assert voting_share(MAX_DESCRIPTORS // (MIN_FEATURES - 1)) == 0  # too many pictures: no votes at all


def unit_rows(n: int, d: int = 64) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((d, n)))
    return np.ascontiguousarray(q.T, dtype=np.float32)  # (n, d) orthonormal: every cosine is 0


def no_alignment(src: np.ndarray, dst: np.ndarray) -> PairEvidence:
    return PairEvidence(np.zeros(src.size, dtype=np.float32), np.zeros(src.size, dtype=bool))


@pytest.mark.parametrize("inliers", [STRONG_INLIERS, STRONG_INLIERS - 1])
def test_a_proposed_pair_far_under_the_threshold_groups_on_strong_geometry_only(inliers):
    """...and brings its exact copies with it."""
    t = 0.28
    e = unit_rows(4)
    x = np.vstack([e[0], -0.6 * e[0] + 0.8 * e[1], e[2], -0.6 * e[2] + 0.8 * e[3]]).astype(np.float32)
    assert -0.6 < t - VERIFY_BELOW  # cosine -0.6: far under the candidate floor
    asked: list[tuple[int, int]] = []

    def geometry(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pairs = [tuple(sorted(p)) for p in zip(src.tolist(), dst.tolist(), strict=True)]
        asked.extend(pairs)
        return (
            np.array([inliers if p == (0, 1) else 0 for p in pairs], dtype=np.int32),
            np.full(len(pairs), MIN_CONTAINED, dtype=np.float32),
        )

    def partners(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        assert sorted(ids.tolist()) == [0, 1, 2, 3]
        return np.array([0, 2]), np.array([1, 3])

    records = [record(i) for i in range(4)] + [dataclasses.replace(record(4), content_hash=record(1).content_hash)]
    x = np.vstack([x, x[1]])  # file 4: the same bytes as file 1, which only its keypoints bring in
    groups = groups_of(records, x, t, verify=no_alignment, geometry=geometry, partners=partners)
    assert {(0, 1), (2, 3)} <= set(asked)
    expected = [(0, [1, 4])] if inliers >= STRONG_INLIERS else [(1, [4])]
    assert [(g.keep.id, [d.record.id for d in g.duplicates]) for g in groups] == expected
    no_votes = groups_of(records, x, t, verify=no_alignment, geometry=geometry)  # 0-1 is never a candidate
    assert [(g.keep.id, [d.record.id for d in g.duplicates]) for g in no_votes] == [(1, [4])]


@pytest.mark.parametrize("stronger", [0, 1])
def test_a_file_two_centres_could_claim_joins_the_one_with_more_inliers(stronger):
    """Files 0 and 1 are unrelated (cosine 0); file 2 scores 0.71 with both (kept on its score). Keeper order
    makes 0 claim it; it ends up with whichever centre its keypoints match better."""
    e = unit_rows(2)
    x = np.vstack([e, (e[0] + e[1]) / np.sqrt(2)]).astype(np.float32)

    def geometry(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        other = np.where(src == 2, dst, src)  # the centre in a pair with file 2
        inliers = np.where(other == stronger, 60, 20) * ((src == 2) | (dst == 2))  # 0 and 1 do not match
        return inliers.astype(np.int32), np.ones(src.size, dtype=np.float32)

    groups = groups_of([record(i) for i in range(3)], x, 0.28, verify=no_alignment, geometry=geometry)
    assert [(g.keep.id, [d.record.id for d in g.duplicates]) for g in groups] == [(stronger, [2])]
    assert groups[0].duplicates[0].score == pytest.approx(0.5**0.5, abs=1e-5)  # the score to its keeper


def test_dedup_finds_a_strong_crop_and_a_screenshot_its_scores_miss(tmp_path, encoder, monkeypatch):
    """End to end on real files: with a threshold no pair of the tiny random encoder reaches and no verification
    band under it, only keypoint votes can propose the crop and the screenshot; they group with their original,
    the other pictures stay apart; without local features nothing groups."""
    from retrieval.dedup.run import DedupConfig, find_duplicates
    from retrieval.dedup.threshold import Threshold
    from retrieval.dedup.verify import rule as dedup
    from retrieval.indexing.run import index_folder
    from tests.retrieval.conftest import index_cfg

    photos = tmp_path / "photos"
    photos.mkdir()
    original = texture(1)
    w, h = original.size
    original.save(photos / "a.png")
    original.crop((w // 3, h // 4, w - 10, h - 5)).save(photos / "a-crop.png")  # 55% of it, off-centre
    screenshot(original).save(photos / "a-screenshot.png")
    for seed in range(2, 6):
        texture(seed).save(photos / f"other{seed}.png")
    index_folder(index_cfg(photos, encoder, tmp_path))
    monkeypatch.setattr(dedup, "VERIFY_BELOW", 0.0)
    cfg = DedupConfig(index=tmp_path / "idx", threshold=Threshold(1.0), k=8)
    result = find_duplicates(cfg)
    assert [sorted(r.path for r in g.records) for g in result.groups] == [["a-crop.png", "a-screenshot.png", "a.png"]]
    assert result.groups[0].keep.path == "a-screenshot.png"  # the most pixels
    assert (
        find_duplicates(DedupConfig(index=tmp_path / "idx", threshold=Threshold(1.0), k=8, local_features=False)).groups
        == ()
    )
