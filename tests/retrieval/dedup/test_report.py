"""report: one self-contained HTML page, a thumbnail per member, the keeper marked, paths escaped."""

from __future__ import annotations

import base64
import dataclasses
import io
import re

import numpy as np
from PIL import Image

from retrieval.dedup.groups import Duplicate, Group
from retrieval.dedup.report import draw_matches, render_report
from retrieval.dedup.verify.rule import BYTES, Evidence
from retrieval.records import FileRecord

IMG = re.compile(r'<img src="data:image/jpeg;base64,([A-Za-z0-9+/=]+)"')


def make_image(path, size, colour) -> FileRecord:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format="JPEG")
    return FileRecord(0, path.name, path.stat().st_size, 0, "h-" + path.name, *size)


def test_report_has_one_thumbnail_per_member_the_keeper_marked_and_paths_escaped(tmp_path):
    keep = make_image(tmp_path / "keep.jpg", (640, 480), "red")
    odd = make_image(tmp_path / "a<b>.jpg", (320, 240), "blue")
    third = make_image(tmp_path / "c & d.jpg", (100, 300), "green")
    other = make_image(tmp_path / "other.jpg", (50, 50), "white")
    groups = [
        Group(keep, (Duplicate(odd, 0.9734, "near"), Duplicate(third, 1.0, "exact"))),
        Group(other, (Duplicate(keep, 0.95, "near", alignment=0.914),)),  # a verified pair
    ]
    page = render_report(groups, tmp_path, 0.9, thumb_size=128)

    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    assert "<link" not in page and "<script" not in page and 'src="http' not in page  # self-contained
    thumbs = IMG.findall(page)
    assert len(thumbs) == page.count("<img") == 5  # one per member of every group
    for data in thumbs:
        with Image.open(io.BytesIO(base64.b64decode(data))) as im:
            assert im.format == "JPEG" and max(im.size) <= 128
    assert page.count('class="member keep"') == 2 and page.count(">KEEP<") == 2
    assert "a&lt;b&gt;.jpg" in page and "a<b>.jpg" not in page
    assert "c &amp; d.jpg" in page
    assert "0.9734 near" in page and "1.0000 exact" in page
    assert "0.9500 near, aligned 0.91" in page and page.count("aligned") == 1
    assert "0.9000" in page and "2 groups, 3 duplicates" in page


def test_missing_or_unreadable_images_get_a_placeholder(tmp_path):
    keep = make_image(tmp_path / "keep.jpg", (64, 64), "red")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg at all")
    broken = FileRecord(1, "broken.jpg", 17, 0, "h1", 64, 64)
    gone = FileRecord(2, "sub/gone.jpg", 10, 0, "h2", 64, 64)
    page = render_report([Group(keep, (Duplicate(broken, 0.95, "near"), Duplicate(gone, 0.92, "near")))], tmp_path, 0.9)
    assert page.count("<img") == 1
    assert page.count('class="placeholder"') == 2
    assert "broken.jpg" in page and "sub/gone.jpg" in page


def test_exact_only_and_empty_reports(tmp_path):
    page = render_report([], tmp_path, None)
    assert "exact duplicates only" in page and "No duplicates found." in page and "<img" not in page


def test_the_header_names_the_score_the_threshold_applies_to(tmp_path):
    """Issue 16: the header called the normalised score "cosine"."""
    page = render_report([], tmp_path, 0.28)  # the default: scores normalised against the 5th neighbour
    summary = re.search(r'<p class="summary">(.*?)</p>', page).group(1)
    assert "normalised score" in summary and "rank-5 neighbour" in summary and "cosine" not in summary
    assert "0.2800" in summary
    plain = render_report([], tmp_path, 0.9, background_rank=0)  # --background-rank 0: plain cosines
    assert "cosine &ge; 0.9000" in plain and "normalised" not in plain


def test_each_member_shows_why_it_joined_and_its_facts_beside_the_keeper(tmp_path):
    """Issue 27: kind, score and the check that passed; pixels, bytes and date; keypoint matches drawn."""
    keep = dataclasses.replace(make_image(tmp_path / "keep.jpg", (640, 480), "red"), mtime_ns=1_700_000_000 * 10**9)
    crop = make_image(tmp_path / "crop.jpg", (320, 240), "blue")
    copy = make_image(tmp_path / "copy.jpg", (640, 480), "red")
    matches = np.array([[10, 20, 30, 40], [100, 50, 60, 70], [200, 100, 150, 110]], dtype=np.float32)  # (3, 4)
    ev = Evidence("keypoints", inliers=3, contained=1.0, agreement=0.71, conflict=0.12, matches=matches)
    groups = [
        Group(keep, (Duplicate(crop, 0.4123, "near", evidence=ev), Duplicate(copy, 1.0, "exact", evidence=BYTES)))
    ]
    page = render_report(groups, tmp_path, 0.28, thumb_size=64)
    assert "near · score 0.412 · keypoints agree on one geometry · 3 matched points · edges agree 0.71" in page
    assert "exact · score 1.000 · identical bytes" in page
    assert "640&times;480" not in page and "640x480 &middot;" in page and "2023-11-14 22:13" in page  # keeper's date
    assert "320x240 &middot;" in page and page.count("3 matched points: keeper (left)") == 1
    assert page.count("<img") == 4  # three members and one drawing of matches


def test_draw_matches_puts_both_pictures_side_by_side_with_lines_between_the_points():
    a, b = Image.new("RGB", (160, 80), "white"), Image.new("RGB", (40, 80), "white")  # long sides 160 and 80
    out = draw_matches(a, b, np.array([[0.0, 100.0, 0.0, 100.0]]), side=320)
    assert out.size == (320 + 8 + 160, 320)  # a scaled to 320 x 160, b to 160 x 320, 8 px apart
    px = np.asarray(out)  # (H, W, 3)
    y = 100
    row = px[y]  # the one horizontal line from (0, 100) to (328, 100)
    coloured = np.flatnonzero(np.abs(row.astype(int) - 255).sum(axis=1) > 60)
    assert coloured.min() <= 2 and coloured.max() >= 326  # drawn from the left point to the right one
    assert (np.abs(px[10].astype(int) - 255).sum(axis=1) <= 60).all()  # away from it: white pictures
