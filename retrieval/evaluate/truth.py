"""The answer files `retrieval eval` scores against: duplicate groups (`--truth`) and query/match pairs
(`--pairs`), read and checked here; names the index does not hold are counted, never silently dropped."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrieval.errors import InputError

SHOWN_MISSING = 5  # how many missing names a report lists


@dataclass(frozen=True)
class Missing:
    """Names in an answer file that are not in the index: how many, and the first few."""

    count: int = 0
    first: tuple[str, ...] = ()

    @staticmethod
    def of(names: Iterable[str]) -> Missing:
        unique = list(dict.fromkeys(names))
        return Missing(len(unique), tuple(unique[:SHOWN_MISSING]))


def _load_json(path: Path) -> Any:  # noqa: ANN401  (any JSON value; the callers check its shape)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: malformed JSON ({e.msg} at line {e.lineno} column {e.colno})") from None


def _names(path: Path, items: Any, what: str) -> tuple[str, ...]:  # noqa: ANN401
    if not isinstance(items, list) or not all(isinstance(x, str) and x for x in items):
        raise InputError(f"{path}: each {what} must be a list of file paths (strings), got {json.dumps(items)[:60]}")
    return tuple(items)


def read_truth(path: Path) -> tuple[tuple[str, ...], ...]:
    """`{"groups": [[file, ...], ...]}` (paths relative to the indexed root): the true duplicate groups."""
    return read_answers(path).groups


@dataclass(frozen=True)
class Answers:
    """A truth file: duplicate `groups` (the same capture or artwork after edits), and `similar` groups (different
    shots of one scene, different drawings of one subject or template: not duplicates; docs/ARCHITECTURE.md)."""

    groups: tuple[tuple[str, ...], ...]
    similar: tuple[tuple[str, ...], ...] = ()


def read_answers(path: Path) -> Answers:
    """`{"groups": [[file, ...], ...], "similar": [[file, ...], ...]}`; "similar" is optional."""
    doc = _load_json(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("groups"), list):
        raise InputError(f'{path}: expected {{"groups": [[file, ...], ...]}}')
    groups = tuple(_names(path, g, "group") for g in doc["groups"])
    if not groups:
        raise InputError(f"{path}: no groups")
    similar = doc.get("similar", [])
    if not isinstance(similar, list):
        raise InputError(f'{path}: "similar" must be a list of groups [[file, ...], ...]')
    return Answers(groups, tuple(_names(path, g, "similar group") for g in similar))


def read_pairs(path: Path) -> tuple[tuple[str, str], ...]:
    """`[[query, match], ...]`: each query image and an indexed image that shows the same thing."""
    doc = _load_json(path)
    if not isinstance(doc, list) or not doc:
        raise InputError(f"{path}: expected a non-empty list [[query, match], ...]")
    pairs = tuple(_names(path, p, "pair") for p in doc)
    bad = next((p for p in pairs if len(p) != 2), None)
    if bad is not None:
        raise InputError(f"{path}: each pair must be [query, match], got {json.dumps(list(bad))[:60]}")
    return tuple((q, m) for q, m in pairs)


def known_groups(
    groups: Iterable[tuple[str, ...]], known: Callable[[str], bool]
) -> tuple[list[tuple[str, ...]], Missing]:
    """The groups with only the files the index holds (`known(name)`), and the names it does not hold."""
    kept, missing = [], []
    for g in groups:
        kept.append(tuple(x for x in g if known(x)))
        missing.extend(x for x in g if not known(x))
    return [g for g in kept if len(g) > 1], Missing.of(missing)
