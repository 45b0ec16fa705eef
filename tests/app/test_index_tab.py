"""Index tab on the tiny index: counts, the bad file with its reason, the training summary and metrics."""

from __future__ import annotations

import pytest

from app import index_tab
from plumbing.images import BadImageError, load_image


def test_summary_counts_and_bad_files(engine, tiny):
    text = index_tab.summary(engine)
    assert f"`{tiny.photos.resolve()}`" in text or f"`{tiny.photos}`" in text
    assert "17 indexed, 1 could not be read" in text
    assert "flat" in text and "recall@10" in text
    assert "K = 9, m = 0.99" in text and "2 steps of batch 8" in text
    with pytest.raises(BadImageError) as bad:  # the loader's own reason for the planted text file
        load_image(tiny.photos / "notes.jpg")
    assert bad.value.reason.startswith("not an image")
    assert index_tab.bad_files(engine) == [["notes.jpg", bad.value.reason]]


def test_loss_curve_and_health_from_the_run(engine):
    fig = index_tab.loss_curve(engine)
    (line,) = fig.axes[0].get_lines()
    assert list(line.get_xdata()) == [1, 2]  # every step from the checkpoint (metrics.jsonl has step 2 only)
    rows = index_tab.health(engine)
    assert len(rows) == 1 and rows[0][0] == 1.0 and 0.0 <= rows[0][2] <= 1.0  # one epoch, pretext top-1


def test_untrained_encoder_has_no_training_summary(untrained_engine):
    assert "**Training run:** none" in index_tab.summary(untrained_engine)
    assert index_tab.loss_curve(untrained_engine) is None and index_tab.health(untrained_engine) == []
