"""publish() writes a result's files byte for byte as the benchmarks wrote them themselves."""

from __future__ import annotations

import json

from bench.kit.results import RESULTS, publish

RESULT = {"machine": {"cpus": 2}, "rows": [{"f1": 0.5}]}


def test_house_style_json_md_and_printed(tmp_path, capsys) -> None:
    publish("x", RESULT, "| a |\n", folder=tmp_path)
    assert (tmp_path / "x.json").read_text() == json.dumps(RESULT, indent=1)
    assert (tmp_path / "x.md").read_text() == "| a |\n"
    assert capsys.readouterr().out == "| a |\n\n"


def test_indent_two_with_newline_and_no_echo(tmp_path, capsys) -> None:
    out = tmp_path / "deeper" / "out"  # an --out folder not made yet
    publish("y", RESULT, "| b |", folder=out, indent=2, newline=True, echo=False)
    assert (out / "y.json").read_text() == json.dumps(RESULT, indent=2) + "\n"
    assert (out / "y.md").read_text() == "| b |"
    assert capsys.readouterr().out == ""


def test_json_only(tmp_path, capsys) -> None:
    publish("z", RESULT, None, folder=tmp_path, indent=2, newline=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["z.json"]
    assert capsys.readouterr().out == ""


def test_default_folder_is_bench_results() -> None:
    assert RESULTS.parts[-2:] == ("bench", "results")
