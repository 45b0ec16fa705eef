"""`retrieval search` output: the score a person reads and its band in every format, the raw cosine kept
under its own name in JSON and CSV."""

from __future__ import annotations

import csv
import io
import json

from cli.commands.search import format_results
from retrieval.searching.query import QueryResult
from retrieval.searching.searcher import Hit

RESULTS = [
    QueryResult(
        "q.jpg",
        (Hit(1, 4, "/root/a.jpg", 1.0, 1.0, "same picture"), Hit(2, 7, "/root/b.jpg", 0.94, -0.8, "unrelated")),
    )
]


def test_json_keeps_the_cosine_beside_score_and_band():
    (r,) = json.loads(format_results(RESULTS, "json"))
    assert r["results"][1] == {"rank": 2, "path": "/root/b.jpg", "score": -0.8, "band": "unrelated", "cosine": 0.94}


def test_csv_columns():
    rows = list(csv.DictReader(io.StringIO(format_results(RESULTS, "csv"))))
    assert [(r["score"], r["band"], r["cosine"]) for r in rows] == [
        ("1.000000", "same picture", "1.000000"),
        ("-0.800000", "unrelated", "0.940000"),
    ]


def test_table_shows_score_and_band():
    lines = format_results(RESULTS, "table").splitlines()
    assert lines[0] == "q.jpg"
    assert lines[1].split() == ["1", "1.000", "same", "picture", "/root/a.jpg"]
    assert lines[2].split() == ["2", "-0.800", "unrelated", "/root/b.jpg"]
    assert "0.940" not in lines[2]  # the table shows the score, not the raw cosine
