"""The assembled app: four tabs; one public API endpoint (`search`); the heavy handlers share a concurrency
limit, the searches theirs (as many at once as the query batcher embeds together); handlers are the plain module
functions of the tab modules."""

from __future__ import annotations

import dataclasses

import gradio as gr

from app import dedup_tab, dictionary_tab, search_tab
from app.batching import MAX_BATCH
from app.ui import build_app


def test_tabs_endpoints_and_concurrency(engine):
    blocks = build_app(engine)
    tabs = [b.label for b in blocks.blocks.values() if isinstance(b, gr.Tab)]
    assert tabs == ["Search", "Duplicates", "Dictionary look-up", "Index"]
    fns = list(blocks.fns.values())
    public = [f for f in fns if f.api_visibility == "public"]
    assert [f.api_name for f in public] == ["search"]
    searches = {h.__name__ for h in (search_tab.search, search_tab.search_json, search_tab.more_like_this)}
    searching = [f for f in fns if f.fn is not None and f.fn.__name__ in searches]
    assert len(searching) >= 4  # search (button, upload), the API's search, more like this
    for f in searching:
        assert f.concurrency_limit == MAX_BATCH and f.concurrency_id == "search", f.fn.__name__
    looking = [f for f in fns if f.fn is not None and f.fn.__name__ == dictionary_tab.look_up.__name__]
    assert len(looking) >= 2  # look-up (upload, fresh pair)
    for f in looking:
        assert f.concurrency_limit == engine.cfg.concurrency and f.concurrency_id == "heavy", f.fn.__name__
    dedup = [f for f in fns if f.fn.__name__ == dedup_tab.find.__name__]
    assert dedup and all(f.concurrency_limit == 1 for f in dedup)


def _buttons(engine) -> list[str]:
    return [str(b.value) for b in build_app(engine).blocks.values() if isinstance(b, gr.Button)]


def test_move_buttons_only_with_move_to(engine, tmp_path):
    review = _buttons(engine)
    assert "Find duplicates" in review and not any("Move" in x or "Undo" in x for x in review)
    moving = _buttons(dataclasses.replace(engine, cfg=dataclasses.replace(engine.cfg, move_to=tmp_path / "d")))
    assert {"Move duplicates aside...", "Confirm: move them now", "Undo last move"} <= set(moving)
