"""End to end in a real browser: Debian's chromium driven by Playwright against the app on a free loopback
port. Upload a picture of the tiny index: the gallery's first result is that file. Open the dictionary
tab, upload: an InfoNCE loss appears. Screenshots go to out/test-app-browser/ (or $APP_TEST_OUTPUT).

Skipped only where /usr/bin/chromium is absent outside CI; in CI (CI=true) a missing browser fails."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import pytest

from app.main import start
from tests.app.server import free_port

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TIMEOUT_MS = 120_000  # a busy 2-core machine: the first encode also warms the model


def _require_browser():
    in_ci = os.environ.get("CI", "").lower() == "true"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if in_ci:
            pytest.fail("playwright is not installed (pip install -e '.[dev]')")
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    if not CHROMIUM.exists():
        if in_ci:
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs it with apt-get install -y chromium")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium); runs in CI")
    return sync_playwright


@pytest.fixture(scope="module")
def server(engine):
    srv = start(dataclasses.replace(engine, cfg=dataclasses.replace(engine.cfg, port=free_port())))
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def shots() -> Path:
    out = Path(os.environ.get("APP_TEST_OUTPUT", "out/test-app-browser"))
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.mark.slow
def test_search_and_dictionary_in_chromium(server, tiny, shots):
    sync_playwright = _require_browser()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(server.url)
            page.get_by_role("tab", name="Search").wait_for()

            page.locator("input[type=file]").first.set_input_files(str(tiny.photos / "b/p12.png"))
            first = page.get_by_text(re.compile(r"^\s*1\.000\s+b/p12\.png\s*$")).first
            first.wait_for()
            assert "b/p12.png" in first.inner_text()
            page.screenshot(path=str(shots / "search.png"), full_page=True)

            page.get_by_role("tab", name="Dictionary look-up").click()
            upload = page.locator("[role=tabpanel]:visible input[type=file]").first
            upload.set_input_files(str(tiny.photos / "a/p05.png"))
            loss = page.get_by_text(re.compile(r"InfoNCE loss = \d+\.\d{4}")).first
            loss.wait_for()
            assert re.search(r"InfoNCE loss = \d+\.\d{4}", loss.inner_text())
            page.screenshot(path=str(shots / "dictionary.png"), full_page=True)
        finally:
            browser.close()
    assert (shots / "search.png").stat().st_size > 0 and (shots / "dictionary.png").stat().st_size > 0


@pytest.mark.slow
def test_mark_not_a_duplicate_move_and_undo_in_chromium(tiny, tmp_path, shots):
    """Issue 27: in the Duplicates tab, mark one of two copies "not a duplicate", move: the other copy moves, the
    marked one stays (bytes unchanged); undo puts every file back."""
    import hashlib
    import shutil

    from app.config import AppConfig
    from app.engine import Engine
    from tests.app.conftest import COPY, _index

    sync_playwright = _require_browser()
    original, second = "a/p03.png", "a/second-copy-of-p03.png"
    photos, move_to = tmp_path / "photos", tmp_path / "photos-duplicates"
    shutil.copytree(tiny.photos, photos)
    shutil.copyfile(photos / original, photos / second)

    def files() -> dict[str, str]:
        found = sorted(p for p in photos.rglob("*") if p.is_file())
        return {p.relative_to(photos).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in found}

    before = files()
    index = _index(photos, tiny.run, tmp_path / "idx")
    srv = start(Engine.load(AppConfig(index=index, device="cpu", port=free_port(), move_to=move_to)))
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 1400})
                page.set_default_timeout(TIMEOUT_MS)
                page.goto(srv.url)
                page.get_by_role("tab", name="Duplicates").click()
                page.get_by_label("exact", exact=True).check()
                page.get_by_role("button", name="Find duplicates").click()
                page.get_by_text("1 groups, 2 duplicates").wait_for()
                page.get_by_label("file in this group").click()
                page.get_by_role("option", name=second).click()
                page.get_by_role("button", name=re.compile("^Not a duplicate")).click()
                page.get_by_text("1 groups, 1 duplicates").wait_for()
                page.get_by_text("1 marked not a duplicate").wait_for()
                page.screenshot(path=str(shots / "dedup-marked.png"), full_page=True)

                page.get_by_role("button", name="Move duplicates aside...").click()
                page.get_by_text(f"leaving {second}: marked not a duplicate").wait_for()
                page.get_by_role("button", name="Confirm: move them now").click()
                page.get_by_text("Moved 1 files").wait_for()
                assert not (photos / COPY).exists() and (move_to / COPY).exists()
                after = files()
                assert after == {k: v for k, v in before.items() if k != COPY}  # the marked copy stayed, unchanged
                page.screenshot(path=str(shots / "dedup-moved.png"), full_page=True)

                page.get_by_role("button", name="Undo last move").click()
                page.get_by_text("Restored 1 files").wait_for()
                assert files() == before
            finally:
                browser.close()
    finally:
        srv.close()
