"""Truth files (retrieval.evaluate.truth): duplicate groups and the optional similar list (issue 27)."""

from __future__ import annotations

import json

import pytest

from retrieval.errors import InputError
from retrieval.evaluate.dedup import similar_pairs
from retrieval.evaluate.truth import read_answers, read_truth


def write(path, doc) -> object:  # noqa: ANN001
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def test_similar_list_is_read_beside_the_groups(tmp_path):
    doc = {"groups": [["a.png", "a-copy.png"]], "similar": [["a.png", "a-copy.png", "b.png"]]}
    answers = read_answers(write(tmp_path / "t.json", doc))
    assert answers.groups == (("a.png", "a-copy.png"),) and answers.similar == (("a.png", "a-copy.png", "b.png"),)
    assert read_truth(tmp_path / "t.json") == answers.groups
    # a similar group's pairs that are duplicate pairs too stay duplicates: a-b and a-copy-b are the similar ones
    assert similar_pairs(list(answers.similar), list(answers.groups)) == {
        frozenset({"a.png", "b.png"}),
        frozenset({"a-copy.png", "b.png"}),
    }


def test_the_similar_list_is_optional_and_checked(tmp_path):
    assert read_answers(write(tmp_path / "t.json", {"groups": [["a", "b"]]})).similar == ()
    with pytest.raises(InputError, match="similar"):
        read_answers(write(tmp_path / "bad.json", {"groups": [["a", "b"]], "similar": {"a": "b"}}))
    with pytest.raises(InputError, match="similar group"):
        read_answers(write(tmp_path / "bad2.json", {"groups": [["a", "b"]], "similar": [["a", 3]]}))


def test_the_samples_truth_follows_the_definition():
    """samples/duplicates.json: duplicates and similar pictures apart, no pair in both."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[3] / "samples"
    answers = read_answers(root / "duplicates.json")
    files = {f for g in (*answers.groups, *answers.similar) for f in g}
    assert all((root / f).is_file() for f in files)
    assert answers.similar and len(similar_pairs(list(answers.similar), list(answers.groups))) > 0
