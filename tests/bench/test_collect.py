"""bench.collect: docs/BENCHMARKS.md is what it builds, and how it orders results and places notes."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from bench.collect import PAGE, build, names

SUMMARY = "# Benchmarks\n\nsummary\n\n\n"


def test_page_is_what_collect_builds() -> None:
    page, built = PAGE.read_text(), build()
    if page != built:
        diff = difflib.unified_diff(
            page.splitlines(keepends=True), built.splitlines(keepends=True), "docs/BENCHMARKS.md", "bench.collect"
        )
        pytest.fail(
            "docs/BENCHMARKS.md is not what bench.collect builds: run `python -m bench.collect` (hand-written text"
            " belongs in bench/notes/NAME.md or bench/SUMMARY.md, not in the page)\n" + "".join(list(diff)[:60])
        )


def _root(tmp_path: Path, results: dict[str, str], notes: dict[str, str]) -> Path:
    (tmp_path / "SUMMARY.md").write_text(SUMMARY)
    for folder, files in (("results", results), ("notes", notes)):
        (tmp_path / folder).mkdir()
        for name, text in files.items():
            (tmp_path / folder / f"{name}.md").write_text(text)
    return tmp_path


def test_suite_order_then_the_rest_alphabetically_notes_after_their_result(tmp_path) -> None:
    root = _root(
        tmp_path,
        results={"zeta": "## zeta\n", "beta": "## beta\n\n", "alpha": "## alpha\n", "gamma": "## gamma\n"},
        notes={"beta": "\nbeta note\n\n", "gamma": "gamma note\n", "delta": "delta note, no result\n"},
    )
    order = ("gamma", "beta", "not_run")
    assert names(root, order) == ["gamma", "beta", "alpha", "delta", "zeta"]
    assert build(root, order) == (
        "# Benchmarks\n\nsummary\n"
        "\n## gamma\n\ngamma note\n"
        "\n## beta\n\nbeta note\n"
        "\n## alpha\n"
        "\ndelta note, no result\n"  # a note whose result is missing is still shown, where the result would be
        "\n## zeta\n"
    )


def test_no_notes_folder(tmp_path) -> None:
    (tmp_path / "SUMMARY.md").write_text(SUMMARY)
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "a.md").write_text("## a\n")
    assert build(tmp_path, ()) == "# Benchmarks\n\nsummary\n\n## a\n"


def test_before_block_goes_inside_the_result(tmp_path) -> None:
    result = "## shots\n\n| a |\n|---|\n\nGroups at the default: x + y\n\nOther pairs: z\n"
    note = (
        "after the result\n\n"
        "<!-- before: Groups at the default -->\n\ninside, first\n\n"
        "<!-- before: Other pairs -->\ninside, second\n"
    )
    root = _root(tmp_path, results={"shots": result}, notes={"shots": note})
    assert build(root, ("shots",)) == (
        "# Benchmarks\n\nsummary\n\n"
        "## shots\n\n| a |\n|---|\n\n"
        "inside, first\n\nGroups at the default: x + y\n\n"
        "inside, second\n\nOther pairs: z\n\n"
        "after the result\n"
    )


@pytest.mark.parametrize("results", [{"shots": "## shots\n\nreworded\n"}, {}])
def test_before_block_without_its_line_is_an_error(tmp_path, results) -> None:
    root = _root(tmp_path, results=results, notes={"shots": "<!-- before: Groups at the default -->\ntext\n"})
    with pytest.raises(ValueError, match=r"bench/notes/shots\.md: no line .* 'Groups at the default'"):
        build(root, ("shots",))
