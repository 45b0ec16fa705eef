"""The CLI's progress bars: one per stage on stderr, following a total that moves, closed when done."""

from __future__ import annotations

import logging

from cli.commands.bars import StderrBars, stderr_bars


def test_a_bar_per_stage_closes_when_done(capsys):
    bars = StderrBars()
    bars("embedding", 1, 3)
    bars("training", 5, 10, "loss 1.234")
    bars("embedding", 3, 3)  # done: its bar closes
    assert set(bars._bars) == {"training"}
    bars("training", 6, 12)  # a time budget moved the total
    assert bars._bars["training"].total == 12 and bars._bars["training"].n == 6
    bars.close()
    out, err = capsys.readouterr()
    assert out == ""  # stdout stays clean for --format json
    assert "embedding" in err and "3/3" in err and "loss 1.234" in err


def test_log_lines_print_above_the_bars(capsys):
    logging.getLogger().addHandler(handler := logging.StreamHandler())
    try:
        with stderr_bars() as bars:
            bars("embedding", 1, 4)
            logging.getLogger("retrieval.test").warning("skipping broken.jpg: truncated")
            bars("embedding", 4, 4)
    finally:
        logging.getLogger().removeHandler(handler)
    _, err = capsys.readouterr()
    (line,) = [line for line in err.split("\n") if "skipping" in line]
    # what a terminal shows of that line is what follows its last carriage return: the bar was cleared first
    assert line.rsplit("\r", 1)[-1] == "skipping broken.jpg: truncated"
